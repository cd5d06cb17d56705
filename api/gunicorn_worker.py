"""gunicorn's threaded worker, made immune to slow clients (``worker_class`` in api.gunicorn_conf).

The stock gthread worker hands a connection to a thread as soon as its first byte arrives; the
thread then reads the rest of the request at the client's pace. Fifty clients sending one
header line a second ("slowloris") therefore held every thread, and ``/healthz`` went
unanswered for as long as they liked.

Here the worker's event loop itself reads each request (head, and a body of known length up to
MAILGATE_MAX_REQUEST_BYTES) without blocking, and only a complete request reaches a thread. A
slow client costs one socket and its buffer, never a thread, and is cut off when its request
is not complete :data:`HEAD_SECONDS` after it began (:data:`BODY_SECONDS` more for the body).
TLS connections (gunicorn's ``certfile``) keep gunicorn's own reading.
"""

from __future__ import annotations

import io
import os
import re
import selectors
import socket
import time
from collections import deque
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

from mailgate.config import Settings

HEAD_SECONDS = 10.0
"""A request's line and headers must be complete this long after its first chance to start."""
BODY_SECONDS = 30.0
"""A body of known length must be complete this long after its head."""
HEAD_LIMIT = 128 * 1024
"""A head still open after this many bytes goes to gunicorn's parser, which refuses it."""
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LENGTH = re.compile(rb"(?im)^content-length[ \t]*:[ \t]*(\d{1,12})[ \t]*\r?$")


class _Reading:
    """What the event loop holds of one connection's next request."""

    def __init__(self, limit: int) -> None:
        self.data = bytearray()
        self.deadline = time.monotonic() + HEAD_SECONDS
        self.needed: int | None = None
        self.limit = limit

    def complete(self) -> bool:
        """True when a thread may take over: the request is whole, or too odd to wait for."""
        if self.needed is None:
            end = _HEAD_END.search(self.data)
            if end is None:
                return len(self.data) > HEAD_LIMIT
            head = bytes(self.data[: end.end()])
            length = _LENGTH.search(head)
            if length is None or b"transfer-encoding" in head.lower():
                return True  # no body, or a chunked one: gunicorn reads it
            if int(length.group(1)) > self.limit:
                return True  # the app answers 413 without reading it
            self.needed = end.end() + int(length.group(1))
            self.deadline = time.monotonic() + BODY_SECONDS
        return len(self.data) >= self.needed


class BufferingThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gthread with each request read by the event loop before a thread handles it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading: deque[TConn] = deque()
        self.body_limit = Settings.from_env().max_request_bytes

    def accept(self, listener: socket.socket) -> None:
        try:
            client, address = listener.accept()
        except OSError:
            return  # another worker took it, or the client gave up
        self.nr_conns += 1
        self._read_request(TConn(self.cfg, client, address, listener.getsockname()))

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_request(conn)

    def _read_request(self, conn: TConn) -> None:
        if self.cfg.is_ssl:
            self.enqueue_req(conn)
            return
        conn.sock.setblocking(False)
        conn.reading = _Reading(self.body_limit)
        self.reading.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_bytes, conn))

    def _on_bytes(self, conn: TConn, client: socket.socket) -> None:
        try:
            data = client.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._forget(conn)
            return
        reading: _Reading = conn.reading
        reading.data += data
        if reading.complete():
            self.poller.unregister(client)
            self.reading.remove(conn)
            conn.data_ready = True
            self.enqueue_req(conn)

    def _forget(self, conn: TConn) -> None:
        self.poller.unregister(conn.sock)
        self.reading.remove(conn)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """gunicorn's expiry of idle connections, plus the requests read too slowly."""
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c in self.reading if c.reading.deadline <= now]:
            self._forget(conn)

    def handle(self, conn: TConn) -> Any:
        reading: _Reading | None = getattr(conn, "reading", None)
        if reading is not None:
            conn.reading = None
            conn.sock.setblocking(True)
            conn.init()  # does nothing for a kept-alive connection
            unreader = conn.parser.unreader
            rest = unreader.buf.getvalue()
            unreader.buf = io.BytesIO()
            unreader.buf.write(rest + bytes(reading.data))
            unreader.buf.seek(0, os.SEEK_END)
        return super().handle(conn)
