"""A real relay that bounces: a private Postfix (Debian's ``postfix``) from a temporary config
folder on a loopback port. mailgate delivers to it with the VERP return path; Postfix queues
the e-mail, its local delivery finds no such user, and Postfix sends its own delivery status
notification to the return path, which its transport map routes to the real ``mailgate
bounces`` listener. The e-mail must end ``Bounced`` with Postfix's code.

``make test`` installs Postfix when it is missing (as root, with apt, Debian's own instance
left unconfigured); without it this test is skipped, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from mailgate.config import Settings
from mailgate.jobs import EmailJob
from mailgate.status import Status, StatusStore
from tests.support import VENV_BIN, RedisServer, Service, free_port, mailgate_env, wait_for
from worker.delivery import Delivery
from worker.smtp import SmtpTransport

pytestmark = pytest.mark.integration  # a real Postfix and `mailgate bounces` of its own

POSTFIX = shutil.which("postfix") or (
    "/usr/sbin/postfix" if Path("/usr/sbin/postfix").exists() else None
)
POSTFIX_DB = 14
BOUNCES = "bounces@bounce.test"

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
local     unix  - n n -  - local
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def main_cf(root: Path, listener: int) -> str:
    """The relay: local delivery for relay.test with no recipient check at SMTP time (so it
    queues first and bounces after), reports for bounce.test to the listener, no DNS."""
    return f"""\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.test
mydomain = relay.test
myorigin = relay.test
mydestination = relay.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
local_recipient_maps =
alias_maps =
alias_database =
smtp_dns_support_level = disabled
transport_maps = inline:{{ bounce.test=smtp:[127.0.0.1]:{listener} }}
maillog_file = /dev/stdout
smtputf8_enable = no
biff = no
"""


@pytest.fixture
def quiet(settings: Settings, redis_server: RedisServer) -> Iterator[Settings]:
    url = f"redis://127.0.0.1:{redis_server.port}/{POSTFIX_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield replace(settings, redis_url=url, broker_url=url, bounce_address=BOUNCES)
    client.flushdb()


@pytest.fixture
def bounces(quiet: Settings, tmp_path: Path) -> Iterator[int]:
    """`mailgate bounces`, the real command, listening for reports to BOUNCES."""
    port = free_port()
    env = mailgate_env(
        tmp_path,
        quiet.redis_url,
        "smtp://127.0.0.1:25",
        BOUNCE_ADDRESS=BOUNCES,
        BOUNCE_SMTP_PORT=str(port),
        LOG_FORMAT="text",
    )
    service = Service(
        "bounces", [str(VENV_BIN / "mailgate"), "bounces"], env, tmp_path / "bounces.log"
    ).start()
    service.wait_output("mailgate bounces ready", 30)
    yield port
    service.stop()


@pytest.fixture
def postfix(bounces: int) -> Iterator[int]:
    if POSTFIX is None:
        pytest.skip("Debian's postfix is not installed (make test installs it)")
    # Postfix's daemons run as its own user: the folder must be theirs to enter.
    root = Path(tempfile.mkdtemp(prefix="mailgate-postfix-"))
    root.chmod(0o755)
    conf = root / "conf"
    conf.mkdir()
    (root / "data").mkdir()
    (root / "queue").mkdir()  # Postfix makes its subfolders and owners at start
    shutil.chown(root / "data", "postfix")
    port = free_port()
    (conf / "main.cf").write_text(main_cf(root, bounces))
    (conf / "master.cf").write_text(MASTER_CF.format(port=port))
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    service = Service("postfix", [POSTFIX, "-c", str(conf), "start-fg"], env, root / "log")
    service.start()
    try:
        service.wait_output("daemon started", 30)
        yield port
    finally:
        service.stop()
        if (root / "queue" / "pid" / "master.pid").exists():
            subprocess.run(
                [POSTFIX, "-c", str(conf), "stop"], check=False, capture_output=True, timeout=30
            )
        print((root / "log").read_text(errors="replace")[-3000:])
        shutil.rmtree(root, ignore_errors=True)


def test_postfix_bounces_and_the_email_becomes_bounced_with_its_code(
    postfix: int, quiet: Settings
) -> None:
    store = StatusStore.from_url(quiet.redis_url, quiet.status_ttl_seconds)
    job = EmailJob(
        str(uuid.uuid4()),
        "ivr",
        "receipts@shop.example",
        ("no.such.user@relay.test",),
        "Thank you for your call.",
    )
    store.create(job, watchdog_at=time.time() + 3600)
    relay = replace(quiet, smtp=(replace(quiet.smtp[0], host="127.0.0.1", port=postfix),))
    transport = SmtpTransport(relay.smtp[0], relay.smtp_timeout_seconds)
    try:
        Delivery(store, transport, relay).deliver(job.email_id)
    finally:
        transport.close()
    sent = store.get(job.email_id)
    assert sent is not None and sent.status is not Status.FAILED, sent
    # Postfix took it (250 after queueing), then bounced it on its own.

    def bounced() -> bool:
        record = store.get(job.email_id)
        return record is not None and record.status is Status.BOUNCED

    wait_for(bounced, 60, "Postfix's report to make the e-mail Bounced")
    record = store.get(job.email_id)
    assert record is not None
    assert record.bounce_code == "5.1.1"
    assert record.bounce_reason == 'unknown user: "no.such.user"'
    assert record.recipients[0].accepted is True
    assert record.recipients[0].bounce is not None
