"""A fast counting SMTP sink, in a process of its own: ``python -m bench.sink``.

It answers 250 to every message, stores nothing, and notes the wall-clock time it first saw
each Message-ID (the moment it answers 250). A tiny HTTP side channel on another port reports:

- ``GET /count``  ``{"total": n, "unique": n, "first": t, "last": t}``
- ``GET /times``  ``{"<Message-ID local part>": t, ...}``
- ``POST /reset`` forget everything

Times are ``time.time()``, comparable with the ``created_at`` of mailgate's status records.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*<([^@>\s]{1,128})@", re.IGNORECASE | re.MULTILINE)


class CountingHandler:
    """aiosmtpd handler: count, note the time per Message-ID, answer 250."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total = 0
        self.times: dict[str, float] = {}
        self.first = 0.0
        self.last = 0.0

    def reset(self) -> None:
        with self.lock:
            self.total, self.times, self.first, self.last = 0, {}, 0.0, 0.0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.note(envelope.original_content or envelope.content)
        return "250 2.0.0 Ok: counted"

    def note(self, data: bytes) -> None:
        """Count one message and note when its Message-ID was first answered 250."""
        now = time.time()
        end = data.find(b"\r\n\r\n")
        found = _MESSAGE_ID.search(data, 0, end if end >= 0 else len(data))
        with self.lock:
            self.total += 1
            self.first = self.first or now
            self.last = now
            if found:
                self.times.setdefault(found.group(1).decode("ascii", "replace"), now)

    def snapshot(self) -> dict[str, float]:
        with self.lock:
            unique = len(self.times)
            return {"total": self.total, "unique": unique, "first": self.first, "last": self.last}

    def copy_times(self) -> dict[str, float]:
        with self.lock:
            return dict(self.times)


def control_server(handler: CountingHandler, port: int) -> ThreadingHTTPServer:
    """The side channel, on 127.0.0.1 only."""

    class Control(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/count":
                self._json(handler.snapshot())
            elif self.path == "/times":
                self._json(handler.copy_times())
            else:
                self.send_error(404)

        def do_POST(self) -> None:
            if self.path != "/reset":
                self.send_error(404)
                return
            handler.reset()
            self._json({"ok": True})

        def _json(self, value: object) -> None:
            body = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # polled every 50 ms: keep the log quiet

    return ThreadingHTTPServer(("127.0.0.1", port), Control)


class SinkClient:
    """The benchmark's side of the side channel."""

    def __init__(self, smtp_port: int, control_port: int) -> None:
        self.smtp_port = smtp_port
        self.control_port = control_port
        self.base = f"http://127.0.0.1:{control_port}"

    def _call(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(self.base + path, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def count(self) -> dict[str, float]:
        found: dict[str, float] = self._call("/count")
        return found

    def unique(self) -> int:
        return int(self.count()["unique"])

    def times(self) -> dict[str, float]:
        found: dict[str, float] = self._call("/times")
        return found

    def reset(self) -> None:
        self._call("/reset", "POST")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="SMTP port")
    parser.add_argument("--control-port", type=int, required=True, help="HTTP side channel")
    args = parser.parse_args()
    handler = CountingHandler()
    # A fixed server_hostname: aiosmtpd would otherwise call socket.getfqdn() per connection.
    smtp = Controller(handler, hostname="127.0.0.1", port=args.port, server_hostname="sink")
    smtp.start()
    control = control_server(handler, args.control_port)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    print(f"sink: SMTP 127.0.0.1:{args.port}, control 127.0.0.1:{args.control_port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    control.shutdown()
    smtp.stop()


if __name__ == "__main__":
    main()
