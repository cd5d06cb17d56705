"""The IMAP poller against a real IMAP server: a private Dovecot (Debian's ``dovecot-imapd``)
on a loopback port with IMAPS (a throw-away certificate), a temporary mail folder, and a
report among other mail in the inbox.

``make test`` installs Dovecot when it is missing (as root, with apt); without it these tests
are skipped, saying why.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import redis
from imapclient import IMAPClient

from mailgate.bounces.imap import Poller
from mailgate.bounces.recorder import Recorder, Verdict
from mailgate.config import ImapTarget, Settings
from mailgate.jobs import EmailJob
from mailgate.status import Status, StatusStore
from mailgate.status.records import rcpt_json
from tests.support import RedisServer, Service, free_port, wait_for

pytestmark = pytest.mark.integration  # a real Dovecot of its own

DOVECOT = shutil.which("dovecot") or (
    "/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None
)
OPENSSL = shutil.which("openssl")
IMAP_DB = 13
USER, PASSWORD = "ivr", "imap-test-pw"
PROCESSED = "mailgate-processed"


@dataclass
class Dovecot:
    port: int
    home: Path

    def client(self) -> IMAPClient:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        client = IMAPClient("127.0.0.1", self.port, ssl=True, ssl_context=context, timeout=10)
        client.login(USER, PASSWORD)
        return client

    def url(self) -> str:
        return f"imaps://{USER}:{PASSWORD}@127.0.0.1:{self.port}/INBOX?verify=false"


def config(workdir: Path, mail: Path, port: int) -> str:
    return f"""\
base_dir = {workdir}/run
state_dir = {workdir}/state
log_path = {workdir}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{workdir}/cert.pem
ssl_key = <{workdir}/key.pem
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:{mail}/%u/Maildir
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {mail}/passwd
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={mail}/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
    ssl = yes
  }}
}}
"""


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    if DOVECOT is None or OPENSSL is None:
        pytest.skip("Debian's dovecot-imapd (and openssl) is not installed (make test installs it)")
    workdir = tmp_path_factory.mktemp("dovecot")
    for name in ("run", "state"):
        (workdir / name).mkdir()
    # The mail folder belongs to Dovecot's own user; the pytest folders are root's alone.
    mail = Path(tempfile.mkdtemp(prefix="mailgate-imap-"))
    shutil.chown(mail, "dovecot", "dovecot")
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
            "/CN=127.0.0.1",
            "-keyout",
            str(workdir / "key.pem"),
            "-out",
            str(workdir / "cert.pem"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    (mail / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")  # read as Dovecot's user
    port = free_port()
    (workdir / "dovecot.conf").write_text(config(workdir, mail, port))
    service = Service(
        "dovecot",
        [DOVECOT, "-F", "-c", str(workdir / "dovecot.conf")],
        {},
        workdir / "dovecot.out",
    ).start()
    server = Dovecot(port, mail)
    try:
        wait_for(lambda: _logs_in(server), 30, "Dovecot to answer IMAPS")
        yield server
    finally:
        service.stop()
        shutil.rmtree(mail, ignore_errors=True)


def _logs_in(server: Dovecot) -> bool:
    try:
        server.client().logout()
    except OSError:
        return False
    return True


@pytest.fixture
def quiet(settings: Settings, redis_server: RedisServer) -> Iterator[Settings]:
    url = f"redis://127.0.0.1:{redis_server.port}/{IMAP_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield replace(settings, redis_url=url, broker_url=url, bounce_address="")
    client.flushdb()


def sent_email(store: StatusStore, address: str) -> str:
    """A Sent e-mail (as the worker records it) to ``address``."""
    job = EmailJob(str(uuid.uuid4()), "ivr", "ivr@shop.example", (address,), "m")
    store.create(job, watchdog_at=time.time() + 3600)
    store.mark_sent(job.email_id, 1, "250 2.0.0 Ok", rcpt=rcpt_json([(address, True, "250 Ok")]))
    return job.email_id


def ndr(email_id: str, address: str) -> bytes:
    """A Microsoft 365-style report: sent to the mailbox, the EmailId only in the returned
    message's Message-ID (the relay forced the envelope sender)."""
    sample = Path(__file__).parent.parent / "samples" / "bounces" / "m365.eml"
    return (
        sample.read_bytes()
        .replace(b"a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d", email_id.encode())
        .replace(b"nobody@contoso.example", address.encode())
        .replace(b"n=\nobody@contoso.example", address.encode())
    )


def test_the_poller_records_reports_and_moves_only_those(dovecot: Dovecot, quiet: Settings) -> None:
    store = StatusStore.from_url(quiet.redis_url, quiet.status_ttl_seconds)
    email_id = sent_email(store, "gone@contoso.example")
    person = b"From: jane@customer.example\r\nSubject: a question\r\n\r\nCall me back.\r\n"
    unknown = ndr(str(uuid.uuid4()), "who@contoso.example")  # expired, or never ours
    imap = dovecot.client()
    for message in (person, ndr(email_id, "gone@contoso.example"), unknown):
        imap.append("INBOX", message)
    target = ImapTarget.parse(dovecot.url())
    poller = Poller(Recorder(store, quiet), target, PROCESSED)

    assert poller.poll_once() == 1
    record = store.get(email_id)
    assert record is not None and record.status is Status.BOUNCED
    assert record.bounce_code == "5.1.10"
    assert poller.counts == {Verdict.NOT_A_BOUNCE: 1, Verdict.RECORDED: 1, Verdict.UNKNOWN: 1}
    # The report moved; what it could not match stays in the inbox, unread.
    imap.select_folder("INBOX")
    left = imap.fetch(imap.search(["ALL"]), ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    subjects = sorted(bytes(v[b"BODY[HEADER.FIELDS (SUBJECT)]"]).strip() for v in left.values())
    assert subjects == [b"Subject: Undeliverable: Your receipt", b"Subject: a question"]
    assert all(b"\\Seen" not in v[b"FLAGS"] for v in left.values())
    imap.select_folder(PROCESSED)
    assert len(imap.search(["ALL"])) == 1

    # The next poll reads only what is new.
    assert poller.poll_once() == 0
    assert sum(poller.counts.values()) == 3
    imap.logout()


def test_a_report_before_its_250_is_read_again_next_time(dovecot: Dovecot, quiet: Settings) -> None:
    store = StatusStore.from_url(quiet.redis_url, quiet.status_ttl_seconds)
    job = EmailJob(str(uuid.uuid4()), "ivr", "ivr@shop.example", ("late@contoso.example",), "m")
    store.create(job, watchdog_at=time.time() + 3600)  # still Queued
    imap = dovecot.client()
    imap.append("INBOX", ndr(job.email_id, "late@contoso.example"))
    imap.logout()
    poller = Poller(Recorder(store, quiet), ImapTarget.parse(dovecot.url()), PROCESSED)
    assert poller.poll_once() == 0
    assert poller.counts[Verdict.EARLY] == 1
    store.mark_sent(job.email_id, 1, "250 Ok", rcpt=rcpt_json([("late@contoso.example", True, "")]))
    assert poller.poll_once() == 1
    record = store.get(job.email_id)
    assert record is not None and record.status is Status.BOUNCED
