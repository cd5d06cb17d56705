"""``mailgate run`` as a new user meets it: first account, the printed curl, the outbox, Flower,
and Ctrl-C leaving no process behind."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import urllib.request
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from xml.etree import ElementTree as ET

import psutil
import pytest
import redis

from mailgate.cli.dev.embedded import port_is_free, private_dir, redis_command
from mailgate.cli.dev.welcome import Welcome
from mailgate.config import Settings
from mailgate.users import UserStore
from tests.support import VENV_BIN, Service, _pings, free_port, wait_for

pytestmark = pytest.mark.integration  # real processes of its own

FLOWER_AUTH = "admin:flower-test-pw"


def fetch(url: str, auth: str | None = None) -> bytes:
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
        return bytes(r.read())


def answers(url: str, auth: str | None = None) -> bool:
    try:
        fetch(url, auth)
    except OSError:
        return False
    return True


def xml(body: bytes) -> dict[str, str]:
    return {child.tag: child.text or "" for child in ET.fromstring(body)}


def owner_only(folder: Path) -> int:
    """Assert every folder under ``folder`` is 0700 and every file 0600; how many files."""
    assert folder.stat().st_mode & 0o777 == 0o700
    files = 0
    for path in folder.rglob("*"):
        mode = path.stat().st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path} is {oct(mode)}"
        files += path.is_file()
    return files


def test_embedded_redis_files_are_owner_only(tmp_path: Path) -> None:
    data = private_dir(private_dir(tmp_path / "var") / "redis")
    port = free_port()
    # The same shell line honcho runs under `mailgate run`.
    proc = subprocess.Popen(  # noqa: S602
        redis_command(port, data),
        shell=True,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        wait_for(lambda: _pings(client), 10, "redis to answer")
        client.set("mailgate:email:x", "a body")
        client.bgrewriteaof()
        wait_for(lambda: not client.info("persistence")["aof_rewrite_in_progress"], 10, "rewrite")
        assert owner_only(tmp_path / "var") >= 1  # appendonly.aof
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


@pytest.mark.parametrize(
    ("host", "senders", "shown"),
    [
        ("127.0.0.1", ("*",), "senders: any (*)"),
        ("::1", ("*",), "senders: any (*)"),
        ("localhost", ("*",), "senders: any (*)"),
        ("0.0.0.0", (), "senders: mailgate@localhost only"),
        ("192.0.2.10", (), "senders: mailgate@localhost only"),
    ],
    ids=["loopback", "ipv6-loopback", "localhost", "every-address", "a-public-address"],
)
def test_the_first_account_may_use_any_sender_only_on_a_local_machine(
    tmp_path: Path,
    host: str,
    senders: tuple[str, ...],
    shown: str,
) -> None:
    settings = Settings.from_env(
        {"MAILGATE_USERS_FILE": str(tmp_path / "users.toml"), "MAILGATE_HOST": host}
    )
    welcome = Welcome(settings, None, None)
    welcome.first_account()
    [account] = UserStore(settings.users_file).accounts().values()
    assert (account.name, account.senders) == ("ivr", senders)
    assert shown in welcome.starting() and shown in welcome.ready()  # and again once ready


@pytest.fixture
def gateway(tmp_path: Path) -> tuple[Service, dict[str, int], Path]:
    ports = {name: free_port() for name in ("api", "flower", "sink", "redis")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGATE_", "FLOWER_"))}
    env.update(
        MAILGATE_PORT=str(ports["api"]),
        MAILGATE_FLOWER_PORT=str(ports["flower"]),
        MAILGATE_SINK_PORT=str(ports["sink"]),
        MAILGATE_EMBEDDED_REDIS_PORT=str(ports["redis"]),
        MAILGATE_FLOWER_BASIC_AUTH=FLOWER_AUTH,
        PYTHONUNBUFFERED="1",
    )
    service = Service(
        "run", [str(VENV_BIN / "mailgate"), "run"], env, tmp_path / "run.log", cwd=tmp_path
    )
    return service, ports, tmp_path


def test_make_run_path_for_a_new_user(gateway: tuple[Service, dict[str, int], Path]) -> None:
    service, ports, cwd = gateway
    service.start()
    try:
        service.wait_output(r"curl '(http://[^']+)'", 60)
        curl_url = re.search(r"curl '(http://[^']+)'", service.output())
        assert curl_url is not None
        api = f"http://127.0.0.1:{ports['api']}"
        flower = f"http://127.0.0.1:{ports['flower']}"
        wait_for(lambda: answers(f"{api}/readyz"), 60, "the API to be ready")
        wait_for(lambda: answers(f"{flower}/api/workers", FLOWER_AUTH), 60, "Flower")
        wait_for(lambda: b"ready." in Path(service.log).read_bytes(), 60, "the worker")

        body = xml(fetch(curl_url.group(1)))
        assert body["Code"] == "200"
        email_id = body["EmailId"]

        eml = cwd / "var" / "outbox" / f"{email_id}.eml"
        wait_for(eml.exists, 30, "the .eml in var/outbox")
        assert b"Hello from mailgate" in eml.read_bytes()

        # On this machine the first account may use any sender, as Ozeki's examples do.
        assert "senders: any (*)" in service.output()
        from_ivr = xml(fetch(curl_url.group(1) + "&Sender=Voicemail+%3Cvoicemail%40pbx.example%3E"))
        assert from_ivr["Code"] == "200", from_ivr
        ivr_eml = cwd / "var" / "outbox" / f"{from_ivr['EmailId']}.eml"
        wait_for(ivr_eml.exists, 30, "the e-mail with a Sender in var/outbox")
        sender = message_from_bytes(ivr_eml.read_bytes(), policy=default)["From"]
        assert sender.addresses[0].addr_spec == "voicemail@pbx.example"
        assert owner_only(cwd / "var") > 3  # the AOF, the users file, the .eml, ...

        # The second curl attaches the sample file of var/attachments/, the default root.
        # Both are printed again once every process is ready, below the start-up lines.
        service.wait_output(r"mailgate is ready", 60)
        curls = re.findall(r"curl '(http://[^']+)'", service.output())
        assert len(curls) == 4 and "Attachments=" in curls[1] and curls[2:] == curls[:2]
        notice = service.output().split("mailgate is ready", 1)[1]
        assert "password: " in notice and "user passwd ivr" in notice
        # No warning that every start used to print (Flower's unanswered inspections at start,
        # granian's thread pool).
        assert "Inspect method" not in service.output()
        assert "Python threads" not in service.output()
        sample = cwd / "var" / "attachments" / "hello.txt"
        assert sample.is_file()
        attached = xml(fetch(curls[1]))
        assert attached["Code"] == "200", attached
        attached_eml = cwd / "var" / "outbox" / f"{attached['EmailId']}.eml"
        wait_for(attached_eml.exists, 30, "the attached e-mail's .eml in var/outbox")
        parts = list(
            message_from_bytes(attached_eml.read_bytes(), policy=default).iter_attachments()
        )
        assert [p.get_filename() for p in parts] == ["hello.txt"]
        assert parts[0].get_content().encode() == sample.read_bytes()

        poll = curl_url.group(1).replace("command=SendEmail", "command=GetEmailStatus")
        poll += f"&EmailId={email_id}"
        assert wait_for(lambda: xml(fetch(poll))["Status"] == "Sent", 30, "Sent")

        # Flower lists the task by its EmailId, as SUCCESS, without the body or the password.
        def task() -> dict[str, object] | None:
            tasks = json.loads(fetch(f"{flower}/api/tasks", FLOWER_AUTH))
            found = tasks.get(email_id)
            return found if found and found.get("state") == "SUCCESS" else None

        info = wait_for(task, 30, "Flower to list the task as SUCCESS")
        assert info["name"] == "mailgate.deliver"
        password = re.search(r"password: (\S+)", service.output())
        assert password is not None
        page = fetch(f"{flower}/task/{email_id}", FLOWER_AUTH).decode()
        for shown in (json.dumps(info), page):
            assert "Hello from mailgate" not in shown
            assert "you@example.com" not in shown
            assert password.group(1) not in shown
        assert email_id in page
    finally:
        children = psutil.Process(service.proc.pid).children(recursive=True) if service.proc else []
        if service.proc and service.proc.poll() is None:
            os.kill(service.proc.pid, signal.SIGINT)  # what Ctrl-C sends
            service.proc.wait(30)
    assert children, "mailgate run started no processes"
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running after Ctrl-C: {[p.pid for p in alive]}"
    # A stop that was asked for reads as one: exit code 0 (so `make run` adds no "Error 130"),
    # and no process reported as killed by a signal.
    assert service.proc is not None and service.proc.returncode == 0
    assert "mailgate run: stopped" in service.output()
    assert not re.search(r"stopped \(rc=-\d+\)", service.output()), service.output()[-2000:]


def _left_behind(folder: Path) -> list[str]:
    """Processes that still run in ``folder`` (every process of a `mailgate run` does)."""
    left = []
    for proc in psutil.process_iter(["cwd", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["cwd"] == str(folder) and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(" ".join(proc.info["cmdline"] or []))
    return left


def _ready(service: Service) -> None:
    """Start ``service`` and wait until it says every process is ready."""
    service.log.unlink(missing_ok=True)
    service.start()
    service.wait_output(r"mailgate is ready", 120)


@pytest.mark.timeout(600)
def test_nothing_outlives_a_closed_terminal_or_a_killed_run(
    gateway: tuple[Service, dict[str, int], Path],
) -> None:
    """A closed terminal (SIGHUP to the session `mailgate run` leads, as a terminal's) and a
    SIGKILL to `mailgate run` itself: every process goes, every port is free, and the next
    `mailgate run` starts. Each process runs in this test's folder, so what is left is found
    by its working folder, also what was started after a first look."""
    service, ports, cwd = gateway
    for end in ("sighup-to-the-session", "sigkill-to-mailgate-run"):
        _ready(service)  # also the proof that the previous end left the ports free
        assert service.proc is not None
        assert len(_left_behind(cwd)) > 5  # redis, sink, web, worker, flower, supervisors ...
        if end == "sighup-to-the-session":
            service.signal(signal.SIGHUP)
        else:
            service.proc.kill()
        service.proc.wait(30)
        wait_for(lambda: not _left_behind(cwd), 60, f"every process to end after {end}")
        busy = [name for name, port in ports.items() if not port_is_free(port)]
        assert not busy, f"ports still taken after {end}: {busy}"
    _ready(service)
    assert "Accounts in " in service.output() and "user passwd ivr" in service.output()
    service.proc.send_signal(signal.SIGINT)  # type: ignore[union-attr]
    assert service.proc.wait(60) == 0  # type: ignore[union-attr]
    wait_for(lambda: not _left_behind(cwd), 60, "every process to end after Ctrl-C")
