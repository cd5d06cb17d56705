"""The IMAP poller (``imapclient``): reports that a relay returns to a mailbox.

Where a relay forces the envelope sender to the sending mailbox (Microsoft 365, Google), its
reports land in that mailbox, among whatever else arrives there. Every
``MAILGATE_BOUNCE_IMAP_POLL_SECONDS`` the poller reads the messages that arrived since its last
look (by UID, with ``BODY.PEEK[]``, so nothing is marked read), records each, and moves what it
recorded to ``MAILGATE_BOUNCE_IMAP_PROCESSED``. Everything else (mail for people, auto-replies,
reports it could not match) stays where it is, untouched: it never deletes what it could not
match. It remembers the mailbox's UIDVALIDITY and the last UID it settled in Redis; a report
that came before its e-mail's 250 was recorded holds that mark, so it is read again next time.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from redis.exceptions import RedisError

from mailgate.bounces.recorder import Recorder, Verdict
from mailgate.config import ImapTarget
from mailgate.status.keys import imap_state_key

log = logging.getLogger(__name__)

FETCH_BATCH = 50
"""Messages fetched per IMAP round trip."""

Login = Callable[[IMAPClient, ImapTarget], object]
"""Authenticates a connected client: the password by default; an OAuth2 token
(``client.oauth2_login(user, token)``) plugs in here."""


def password_login(client: IMAPClient, target: ImapTarget) -> object:
    return client.login(target.username, target.password)


@dataclass
class Poller:
    """Polls one mailbox (see the module)."""

    recorder: Recorder
    target: ImapTarget
    processed: str
    login: Login = password_login
    timeout: float = 30.0
    counts: dict[Verdict, int] = field(default_factory=dict)
    """Messages settled so far, by verdict (for tests and the log)."""

    @property
    def _state_key(self) -> str:
        t = self.target
        return imap_state_key(f"{t.host}:{t.port}:{t.username}:{t.folder}")

    def poll_once(self) -> int:
        """Read what arrived since the last poll; the number of messages recorded."""
        client = self._connect()
        try:
            return self._poll(client)
        finally:
            try:
                client.logout()
            except (IMAPClientError, OSError):
                client.shutdown()

    def run(self, stop: threading.Event, interval: float) -> None:
        """Poll every ``interval`` seconds until ``stop`` is set; trouble is logged, not fatal."""
        while not stop.is_set():
            try:
                self.poll_once()
            except (IMAPClientError, OSError, RedisError) as exc:
                log.warning(
                    "IMAP poll of %s failed: %s: %s", self.target.host, type(exc).__name__, exc
                )
            stop.wait(interval)

    def _connect(self) -> IMAPClient:
        t = self.target
        context = ssl.create_default_context()
        if not t.verify:  # explicit opt-out (?verify=false), for development only
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        client = IMAPClient(t.host, t.port, ssl=t.ssl, ssl_context=context, timeout=self.timeout)
        try:
            if t.starttls:
                client.starttls(context)
            self.login(client, t)
        except BaseException:
            client.shutdown()
            raise
        return client

    def _poll(self, client: IMAPClient) -> int:
        redis = self.recorder.store.redis
        info = client.select_folder(self.target.folder)
        validity = int(info[b"UIDVALIDITY"])
        saved = str(redis.get(self._state_key) or "0:0").split(":")
        last = int(saved[1]) if int(saved[0]) == validity else 0
        uids = sorted(u for u in client.search(["UID", f"{last + 1}:*"]) if u > last)
        if not uids:
            return 0
        done: list[int] = []
        held = False
        try:
            for start in range(0, len(uids), FETCH_BATCH):
                batch = uids[start : start + FETCH_BATCH]
                messages: dict[int, Any] = client.fetch(batch, ["BODY.PEEK[]"])
                for uid in batch:
                    body = messages.get(uid, {}).get(b"BODY[]")
                    if body is None:
                        continue  # expunged meanwhile
                    verdict = self.recorder.record(bytes(body))
                    self.counts[verdict] = self.counts.get(verdict, 0) + 1
                    if verdict in (Verdict.RECORDED, Verdict.IGNORED):
                        done.append(uid)
                    held = held or not verdict.done
                    if not held:
                        last = uid
        finally:
            # What was recorded moves on even if a later message failed; the mark stays at
            # the first message that must be read again.
            self._move(client, done)
            redis.set(self._state_key, f"{validity}:{last}")
        return len(done)

    def _move(self, client: IMAPClient, uids: list[int]) -> None:
        if not uids:
            return
        if not client.folder_exists(self.processed):
            client.create_folder(self.processed)
        if client.has_capability("MOVE"):
            client.move(uids, self.processed)
            return
        client.copy(uids, self.processed)
        client.delete_messages(uids)
        client.uid_expunge(uids)  # only these (UIDPLUS), never someone else's deletions
