"""An SMTP sink that answers like a relay across a network: ``python -m bench.slow_sink``.

A small asyncio server (one event loop, no per-connection thread): it waits ``--delay-ms``
before each reply to MAIL, RCPT and the end of DATA (the 250), as a relay tens of
milliseconds away does, counts each message and notes when it saw each Message-ID. It takes
any number of sessions at once, so the client's concurrency, not the sink, sets the rate.
It offers the same HTTP side channel as :mod:`bench.sink` (``/count``, ``/times``,
``/reset``). With ``--delay-ms 0`` it is a plain, light counting sink.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading

from bench.sink import CountingHandler, control_server

EHLO = b"250-slow-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-PIPELINING\r\n250 SIZE 52428800\r\n"


class Recorder(CountingHandler):
    """Counts messages and notes the first time each Message-ID was answered 250 (the
    counting sink's own :meth:`note`, called by this server's DATA handling)."""


async def session(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: Recorder, delay: float
) -> None:
    writer.write(b"220 slow-sink ESMTP\r\n")
    try:
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(EHLO)
            elif verb in (b"MAIL", b"RCPT"):
                if delay:
                    await asyncio.sleep(delay)
                writer.write(b"250 2.1.0 Ok\r\n")
            elif verb == b"DATA":
                writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                await writer.drain()
                data = await reader.readuntil(b"\r\n.\r\n")
                if delay:
                    await asyncio.sleep(delay)
                record.note(data)
                writer.write(b"250 2.0.0 Ok: counted\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                break
            else:  # HELO, RSET, NOOP, anything else
                writer.write(b"250 2.0.0 Ok\r\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def serve(port: int, record: Recorder, delay: float, stop: asyncio.Event) -> None:
    server = await asyncio.start_server(
        lambda r, w: session(r, w, record, delay), "127.0.0.1", port, backlog=512,
        limit=1 << 24,
    )  # fmt: skip
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="SMTP port")
    parser.add_argument("--control-port", type=int, required=True, help="HTTP side channel")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="wait before each reply")
    args = parser.parse_args()
    record = Recorder()
    control = control_server(record, args.control_port)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    print(f"slow sink: SMTP 127.0.0.1:{args.port} ({args.delay_ms:g} ms per reply), "
          f"control 127.0.0.1:{args.control_port}", flush=True)  # fmt: skip
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.run_until_complete(serve(args.port, record, args.delay_ms / 1000, stop))
    control.shutdown()


if __name__ == "__main__":
    main()
