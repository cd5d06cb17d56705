"""``mailgate web``: the API server as the Procfile starts it (granian, WSGI), over real HTTP.

What the server itself must do, beyond the app (tests/test_api.py covers the app): listen on
$PORT or MAILGATE_PORT, refuse bad settings in one line, hand long Ozeki GET requests to the
app (Code 413 in XML) while refusing far larger heads itself, drop a client that never ends
its request head, keep the query string out of every log line, and keep the metrics folder
only while it runs.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode
from xml.etree import ElementTree as ET

import pytest

from mailgate.cli.server import HEADER_READ_TIMEOUT_MS, listen_port
from mailgate.config import Settings
from mailgate.errors import ConfigError
from mailgate.users import UserStore
from tests.conftest import SEED_PASSWORD, SEED_USER
from tests.support import VENV_BIN, Service, answers, free_port, wait_for, web_args

pytestmark = pytest.mark.integration  # real processes of its own

MAX_REQUEST = 20_000
"""MAILGATE_MAX_REQUEST_BYTES for the server under test: small, so the tests send little."""
URI_LIMIT = 65_534
"""The longest request target granian (Rust's http crate) takes; longer gets HTTP 414."""


def raw_request(port: int, head: bytes, timeout: float = 10) -> bytes:
    """Send one request head; everything the server answers until it closes or the body ends."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        data = b""
        while b"</Response>" not in data:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return data


def code(answer: bytes) -> str:
    body = answer.split(b"\r\n\r\n", 1)[1]
    found = ET.fromstring(body).find("Code")
    assert found is not None
    return found.text or ""


@dataclass
class Web:
    service: Service
    port: int

    def output(self) -> str:
        return self.service.output()


@pytest.fixture(scope="module")
def web(
    env: dict[str, str], users: UserStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Web]:
    """``mailgate web --access-log`` with two processes and a small request limit."""
    port = free_port()
    server_env = {
        **env,
        "MAILGATE_PORT": "1",
        "PORT": str(port),
        "MAILGATE_MAX_REQUEST_BYTES": str(MAX_REQUEST),
    }
    server_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp_path_factory.mktemp("web") / "web.log"
    service = Service("web", [*web_args(), "--workers", "2", "--access-log"], server_env, log)
    service.start()
    wait_for(lambda: answers(f"http://127.0.0.1:{port}/healthz"), 60, "mailgate web")
    yield Web(service, port)
    service.stop()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, 9509), ({"PORT": ""}, 9509), ({"PORT": "5000"}, 5000), ({"PORT": " 8080 "}, 8080)],
    ids=["unset", "empty", "set", "spaces"],
)
def test_port_is_port_else_mailgate_port(environ: dict[str, str], expected: int) -> None:
    assert listen_port(Settings(), environ) == expected


@pytest.mark.parametrize("bad", ["abc", "0", "70000", "-1"], ids=["word", "zero", "big", "neg"])
def test_a_bad_port_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="PORT"):
        listen_port(Settings(), {"PORT": bad})


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MAILGATE_PORT", "abc"), ("PORT", "99999"), ("MAILGATE_MAX_REQUEST_BYTES", "-5")],
    ids=["mailgate-port", "port", "request-bytes"],
)
def test_bad_settings_stop_start_up_with_one_line(variable: str, value: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_") and k != "PORT"}
    env[variable] = value
    result = subprocess.run(web_args(), env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"mailgate: {variable}")


def test_listens_on_port_and_sends_an_email(web: Web) -> None:
    query = urlencode(
        {
            "command": "SendEmail",
            "Recipient": "web@shop.example",
            "Message": "m",
            "Username": SEED_USER,
            "Password": SEED_PASSWORD,
        }
    )
    head = f"GET /api?{query} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    answer = raw_request(web.port, head)
    assert answer.startswith(b"HTTP/1.1 200")
    assert code(answer) == "200"


@pytest.mark.parametrize(
    "extra",
    [MAX_REQUEST + 1, URI_LIMIT - 200],
    ids=["just-over", "near-the-uri-limit"],
)
def test_a_long_get_reaches_the_app_and_gets_413_in_xml(web: Web, extra: int) -> None:
    head = f"GET /api?command=SendEmail&Message={'x' * extra} HTTP/1.1\r\nHost: t\r\n\r\n"
    answer = raw_request(web.port, head.encode())
    assert answer.startswith(b"HTTP/1.1 200")
    assert code(answer) == "413"


@pytest.mark.parametrize(
    ("where", "size"),
    [("url", URI_LIMIT + 10), ("url", MAX_REQUEST + 300_000), ("header", MAX_REQUEST + 300_000)],
    ids=["url-over-64k", "url-huge", "header-huge"],
)
def test_a_head_over_the_servers_limits_is_refused_by_it(web: Web, where: str, size: int) -> None:
    huge = "y" * size
    if where == "url":
        head = f"GET /api?command=SendEmail&Message={huge} HTTP/1.1\r\nHost: t\r\n\r\n"
    else:
        head = f"GET /api?command=SendEmail HTTP/1.1\r\nHost: t\r\nX-Big: {huge}\r\n\r\n"
    try:
        answer = raw_request(web.port, head.encode())
    except (BrokenPipeError, ConnectionResetError):
        answer = b""  # the server hung up while the head was still arriving: refused too
    status = answer.split(b"\r\n", 1)[0]
    assert answer == b"" or re.match(rb"HTTP/1\.1 4\d\d", status), status
    assert b"200" not in status


def test_a_client_that_never_ends_its_head_is_dropped(web: Web) -> None:
    limit = HEADER_READ_TIMEOUT_MS / 1000
    with socket.create_connection(("127.0.0.1", web.port), timeout=limit + 10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: 1\r\n")
        started = time.monotonic()
        try:
            left = sock.recv(1024)
        except ConnectionResetError:
            left = b""
        waited = time.monotonic() - started
    assert not left.startswith(b"HTTP/1.1 200")
    assert limit - 1 <= waited <= limit + 5


def test_no_query_string_in_any_log_line(web: Web) -> None:
    secret = "pw-in-the-url-5521"
    url = f"http://127.0.0.1:{web.port}/api?command=GetEmailStatus&EmailId=x"
    with urllib.request.urlopen(f"{url}&Username={SEED_USER}&Password={secret}", timeout=5):
        pass

    def logged() -> bool:
        return re.search(r'granian\.access.*GET /api\\?" 200', web.output()) is not None

    wait_for(logged, 10, "the access line")
    text = web.output()
    assert secret not in text
    assert "EmailId=x" not in text and "command=" not in text


def test_metrics_folder_lives_as_long_as_the_server(
    env: dict[str, str], tmp_path: Path, web: Web
) -> None:
    # The module's server made its own folder; every worker writes there.
    with urllib.request.urlopen(f"http://127.0.0.1:{web.port}/metrics", timeout=5) as r:
        assert b"mailgate_api_requests_total" in r.read()
    port = free_port()
    server_env = {**env, "MAILGATE_PORT": str(port), "TMPDIR": str(tmp_path)}
    server_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    service = Service(
        "web2",
        [str(VENV_BIN / "mailgate"), "web", "--workers", "1"],
        server_env,
        tmp_path / "web2.log",
    )
    service.start()
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/healthz"), 60, "the second server")
        assert [p.name for p in tmp_path.glob("mailgate-metrics-*")] != []
    finally:
        assert service.stop() == 0
    assert list(tmp_path.glob("mailgate-metrics-*")) == []
