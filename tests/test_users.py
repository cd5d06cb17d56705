"""Accounts: the users file, argon2id, the verified-credentials cache, and the CLI."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from mailgate.errors import AuthFailed, Unavailable, UserError
from mailgate.users import Account, UserStore
from tests.conftest import RunCli


@pytest.fixture
def store(tmp_path: Path) -> UserStore:
    return UserStore(tmp_path / "users.toml", cache_seconds=60)


def test_hashes_are_argon2id_and_the_file_is_private(store: UserStore) -> None:
    store.add("alice", "pw-alice", ("*@shop.example",))
    text = store.path.read_text()
    assert "$argon2id$" in text
    assert "pw-alice" not in text
    assert store.path.stat().st_mode & 0o777 == 0o600


def test_authenticate(store: UserStore) -> None:
    store.add("alice", "pw-alice")
    assert store.authenticate("alice", "pw-alice").name == "alice"
    with pytest.raises(AuthFailed):
        store.authenticate("alice", "wrong")
    with pytest.raises(AuthFailed):
        store.authenticate("bob", "pw-alice")


def test_changes_by_another_process_apply_without_restart(store: UserStore) -> None:
    running = UserStore(store.path)  # as the API holds it
    with pytest.raises(AuthFailed):
        running.authenticate("carol", "pw-carol")
    store.add("carol", "pw-carol")
    assert running.authenticate("carol", "pw-carol").name == "carol"
    store.remove("carol")
    with pytest.raises(AuthFailed):  # the cache does not outlive the account
        running.authenticate("carol", "pw-carol")


def test_cache_skips_argon2_for_a_repeat_and_never_for_a_miss(
    store: UserStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.add("alice", "pw-alice")
    calls: list[str] = []
    real = store._hasher

    class Counting:
        def verify(self, hash_: str, password: str) -> bool:
            calls.append(hash_)
            return real.verify(hash_, password)

    monkeypatch.setattr(store, "_hasher", Counting())
    store.authenticate("alice", "pw-alice")
    store.authenticate("alice", "pw-alice")
    assert len(calls) == 1
    for name in ("alice", "nobody"):  # wrong password and unknown user pay the same work
        with pytest.raises(AuthFailed):
            store.authenticate(name, "wrong")
    assert len(calls) == 3
    assert calls[2] == store._dummy_hash


def test_sender_globs() -> None:
    shop = Account("a", "h", ("*@shop.example",))
    assert shop.may_send_as("Orders@Shop.Example", "mailgate@localhost")
    assert shop.may_send_as("mailgate@localhost", "mailgate@localhost")
    assert not shop.may_send_as("ceo@bank.example", "mailgate@localhost")
    assert not Account("b", "h").may_send_as("x@shop.example", "mailgate@localhost")
    assert Account("c", "h", ("*",)).may_send_as("any@where.example", "mailgate@localhost")


@pytest.mark.parametrize(
    ("name", "password", "rate"),
    [("", "pw", None), ("bad name", "pw", None), ("ok", "", None), ("ok", "pw", "lots")],
    ids=["empty-name", "space-in-name", "empty-password", "bad-rate"],
)
def test_bad_accounts_are_refused(
    store: UserStore, name: str, password: str, rate: str | None
) -> None:
    with pytest.raises(UserError):
        store.add(name, password, rate=rate)
    assert not store.path.exists() or name not in store.accounts()


def test_duplicate_and_missing_users(store: UserStore) -> None:
    store.add("alice", "pw")
    with pytest.raises(UserError):
        store.add("alice", "pw2")
    with pytest.raises(UserError):
        store.remove("bob")


def test_cli_user_add_list_remove(tmp_path: Path, mailgate: RunCli) -> None:
    env = {"MAILGATE_USERS_FILE": str(tmp_path / "users.toml")}
    added = mailgate("user", "add", "shop", "--password-stdin", "--sender", "*@shop.example",
                     "--rate", "5/second", env=env, input="cli-secret-pw\n")  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "cli-secret-pw" not in added.stdout + added.stderr
    users_file = tmp_path / "users.toml"
    assert UserStore(users_file).authenticate("shop", "cli-secret-pw").senders == (
        "*@shop.example",
    )
    listed = mailgate("user", "list", env=env)
    assert listed.stdout.split("\t")[0] == "shop"
    assert "*@shop.example" in listed.stdout and "5/second" in listed.stdout
    again = mailgate("user", "add", "shop", "--password-stdin", env=env, input="x\n")
    assert again.exit_code == 2
    assert again.stderr.strip() == "mailgate: user 'shop' already exists"
    assert mailgate("user", "remove", "shop", env=env).exit_code == 0
    assert UserStore(users_file).accounts() == {}


class _CountingHasher:
    """Wraps the real hasher and counts argon2 verifications."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.calls = 0

    def verify(self, hash_: str, password: str) -> bool:
        self.calls += 1
        return self.real.verify(hash_, password)  # type: ignore[attr-defined, no-any-return]


def test_a_crowd_of_identical_logins_pays_argon2_once(
    store: UserStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.add("alice", "pw-alice")
    counting = _CountingHasher(store._hasher)
    monkeypatch.setattr(store, "_hasher", counting)
    start = threading.Barrier(16)
    results: list[str] = []

    def login() -> None:
        start.wait()
        results.append(store.authenticate("alice", "pw-alice").name)

    threads = [threading.Thread(target=login) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == ["alice"] * 16
    assert counting.calls == 1


def test_an_entry_is_renewed_by_one_caller_before_it_expires(
    store: UserStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.add("alice", "pw-alice")
    store.authenticate("alice", "pw-alice")
    clock = [time.monotonic()]
    monkeypatch.setattr("mailgate.users.time.monotonic", lambda: clock[0])
    clock[0] += store.cache_seconds * 0.9  # in the last fifth of the entry's life
    assert store.cached("alice", "pw-alice") is None  # this caller renews it ...
    assert store.cached("alice", "pw-alice") is not None  # ... everyone else keeps using it
    counting = _CountingHasher(store._hasher)
    monkeypatch.setattr(store, "_hasher", counting)
    store.verify("alice", "pw-alice")
    assert counting.calls == 1
    clock[0] += store.cache_seconds * 0.5  # past the old expiry, inside the renewed one
    assert store.cached("alice", "pw-alice") is not None


def test_a_renewal_never_waits_for_a_busy_password_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = UserStore(tmp_path / "users.toml", 60, concurrent_checks=1, check_wait_seconds=0.2)
    store.add("alice", "pw-alice")
    store.add("bob", "pw-bob")
    store.authenticate("alice", "pw-alice")
    entered, release = threading.Event(), threading.Event()
    real = store._hasher

    class Holding:
        def verify(self, hash_: str, password: str) -> bool:
            if password == "hold":
                entered.set()
                release.wait(30)
            return bool(real.verify(hash_, password))

    monkeypatch.setattr(store, "_hasher", Holding())
    outcomes: list[BaseException] = []

    def hold() -> None:
        try:
            store.verify("bob", "hold")
        except AuthFailed as exc:
            outcomes.append(exc)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert entered.wait(30)  # the one check slot is busy
        with pytest.raises(Unavailable):  # a new check waits 0.2 s, then gives up
            store.verify("bob", "pw-bob")
        clock = [time.monotonic() + store.cache_seconds * 0.9]  # alice's entry: renew it now
        monkeypatch.setattr("mailgate.users.time.monotonic", lambda: clock[0])
        assert store.cached("alice", "pw-alice") is None  # this caller is the one to renew
        started = time.perf_counter()
        assert store.verify("alice", "pw-alice").name == "alice"  # the cache answers at once
        assert time.perf_counter() - started < 0.2
    finally:
        release.set()
        holder.join(30)
    assert len(outcomes) == 1  # the held check ran to its end: a wrong password
