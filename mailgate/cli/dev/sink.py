"""The local SMTP sink for development: stores each message as ``<EmailId>.eml``.

Run as ``python -m mailgate.cli.dev.sink --port 2525 --outbox var/outbox``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*<([A-Za-z0-9-]{1,64})@", re.IGNORECASE | re.MULTILINE)


class OutboxHandler:
    """aiosmtpd handler writing each message atomically into the outbox folder."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        # Owner only: each message is stored whole (mkstemp files are 0600 already).
        outbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(outbox, 0o700)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content or envelope.content
        head = data.split(b"\r\n\r\n", 1)[0]
        found = _MESSAGE_ID.search(head)
        name = found.group(1).decode() if found else str(uuid.uuid4())
        fd, temp = tempfile.mkstemp(dir=self.outbox, prefix=".incoming-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, self.outbox / f"{name}.eml")
        return f"250 2.0.0 Ok: stored as {name}.eml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--outbox", type=Path, default=Path("var/outbox"))
    args = parser.parse_args()
    controller = Controller(OutboxHandler(args.outbox), hostname=args.host, port=args.port)
    controller.start()
    print(f"SMTP sink on {args.host}:{args.port}, writing {args.outbox}/<EmailId>.eml", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
