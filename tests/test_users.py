"""Accounts: the users file, argon2id, the verified-credentials cache, and the CLI."""

from __future__ import annotations

import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from mailgate.config import Settings
from mailgate.errors import AuthFailed, Unavailable, UserError
from mailgate.users import MIN_PASSWORD_CHARS, Account, UserStore, weakness
from tests.conftest import RunCli
from tests.support import wait_for


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


@pytest.mark.slow  # argon2 for each login: seconds on a busy machine
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


@pytest.mark.slow  # argon2 for each login: seconds on a busy machine
def test_cli_user_add_list_remove(tmp_path: Path, mailgate: RunCli) -> None:
    env = {"MAILGATE_USERS_FILE": str(tmp_path / "users.toml")}
    added = mailgate(
        "user",
        "add",
        "shop",
        "--password-stdin",
        "--sender",
        "*@shop.example",
        "--rate",
        "5/second",
        env=env,
        input="cli-secret-pw\n",
    )
    assert added.exit_code == 0, added.output
    assert "cli-secret-pw" not in added.stdout + added.stderr
    users_file = tmp_path / "users.toml"
    assert UserStore(users_file).authenticate("shop", "cli-secret-pw").senders == (
        "*@shop.example",
    )
    listed = mailgate("user", "list", env=env)
    assert listed.stdout.split("\t")[0] == "shop"
    assert "*@shop.example" in listed.stdout and "5/second" in listed.stdout
    again = mailgate("user", "add", "shop", "--password-stdin", env=env, input="other-secret-pw\n")
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


@pytest.mark.slow  # argon2 for each login: seconds on a busy machine
def test_a_new_password_replaces_the_old_at_once_with_no_moment_without_either(
    store: UserStore,
) -> None:
    store.add("alice", "first-password-1")
    old_hash = store.accounts()["alice"].password_hash
    running = UserStore(store.path, cache_seconds=600)  # as an API process holds it
    assert running.authenticate("alice", "first-password-1").name == "alice"  # now cached
    seen: set[str | None] = set()
    stop = threading.Event()

    reader = UserStore(store.path)  # another process, re-reading the file when it changes

    def watch() -> None:
        while not stop.is_set():
            account = reader.get("alice")
            seen.add(account.password_hash if account else None)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        wait_for(lambda: seen, 10, "the reader to see the old password")
        store.set_password("alice", "second-password-2")
        time.sleep(0.05)  # the watcher reads the new file too
    finally:
        stop.set()
        watcher.join(10)
    assert None not in seen and old_hash in seen and len(seen) == 2  # old, then new, never none
    # The running process's cache does not outlive the old password (documented: at once).
    with pytest.raises(AuthFailed):
        running.authenticate("alice", "first-password-1")
    assert running.authenticate("alice", "second-password-2").name == "alice"
    with pytest.raises(UserError, match="no user 'bob'"):
        store.set_password("bob", "third-password-3")


@pytest.mark.parametrize(
    ("password", "weak"),
    [("short", True), ("a" * 11, True), ("aaaabbbbcccc", True), ("abcd" * 3, True),
     ("quick-brown-fox", False), ("Kx9$mW2!pQ7z", False)],
    ids=["short", "eleven", "three-letters", "four-letters", "phrase", "random"],
)  # fmt: skip
def test_password_strength(password: str, weak: bool) -> None:
    assert (weakness(password) is not None) == weak


@pytest.mark.slow  # argon2 for each login: seconds on a busy machine
def test_cli_passwd_and_the_strength_rule(tmp_path: Path, mailgate: RunCli) -> None:
    users_file = tmp_path / "users.toml"
    env = {"MAILGATE_USERS_FILE": str(users_file)}
    weak = mailgate("user", "add", "pbx", "--password-stdin", env=env, input="short\n")
    assert weak.exit_code == 2 and "too weak" in weak.stderr and "--weak-password-ok" in weak.stderr
    assert not users_file.exists()  # refused: nothing written
    forced = mailgate(
        "user", "add", "pbx", "--password-stdin", "--weak-password-ok", env=env, input="short\n"
    )
    assert forced.exit_code == 0, forced.output
    assert str(users_file) in forced.stdout  # it says which file it changed
    assert UserStore(users_file).authenticate("pbx", "short").name == "pbx"

    refused = mailgate("user", "passwd", "pbx", "--password-stdin", env=env, input="tiny\n")
    assert refused.exit_code == 2 and "too weak" in refused.stderr
    assert UserStore(users_file).authenticate("pbx", "short").name == "pbx"  # unchanged
    chosen = mailgate(
        "user", "passwd", "pbx", "--password-stdin", env=env, input="a-long-new-password\n"
    )
    assert chosen.exit_code == 0, chosen.output
    assert "a-long-new-password" not in chosen.output
    assert UserStore(users_file).authenticate("pbx", "a-long-new-password").name == "pbx"

    made_up = mailgate("user", "passwd", "pbx", env=env)
    assert made_up.exit_code == 0, made_up.output
    password = made_up.stdout.split("password: ", 1)[1].strip()
    assert len(password) >= MIN_PASSWORD_CHARS and weakness(password) is None
    assert UserStore(users_file).authenticate("pbx", password).name == "pbx"
    with pytest.raises(AuthFailed):
        UserStore(users_file).authenticate("pbx", "a-long-new-password")
    missing = mailgate("user", "passwd", "nobody", env=env)
    assert missing.exit_code == 2 and missing.stderr.strip() == "mailgate: no user 'nobody'"


def test_user_list_says_which_file_it_read(
    tmp_path: Path, mailgate: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a folder without var/users.toml
    nothing = mailgate("user", "list")
    assert nothing.exit_code == 2 and nothing.stdout == ""
    assert f"no users file at {tmp_path / 'var' / 'users.toml'}" in nothing.stderr
    UserStore(tmp_path / "var" / "users.toml").add("ivr", "ivr-secret-pw")
    found = mailgate("user", "list")
    assert found.exit_code == 0 and found.stdout.startswith("ivr\t")
    assert f"1 account(s) in {tmp_path / 'var' / 'users.toml'}" in found.stderr


def _code(api_url: str, name: str, password: str) -> str:
    """The Ozeki Code of a GetEmailStatus for an id nobody has: 404 once logged in, else 305."""
    query = urllib.parse.urlencode(
        {
            "command": "GetEmailStatus",
            "Username": name,
            "Password": password,
            "EmailId": "00000000-0000-4000-8000-000000000000",
        }
    )
    with urllib.request.urlopen(f"{api_url}/api?{query}", timeout=10) as response:
        return str(ET.fromstring(response.read()).findtext("Code"))


def test_passwd_takes_effect_on_the_running_api_at_once(
    api_url: str, settings: Settings, mailgate: RunCli
) -> None:
    """The old password works up to the change and not after it (the auth cache does not keep
    it), the new one from then on, and no moment rejects both."""
    name = f"rotate-{time.monotonic_ns()}"
    UserStore(settings.users_file).add(name, "rotate-old-password")
    assert _code(api_url, name, "rotate-old-password") == "404"
    assert _code(api_url, name, "rotate-old-password") == "404"  # from the cache now
    env = {"MAILGATE_USERS_FILE": str(settings.users_file)}
    after: list[str] = []

    def poll() -> None:  # a PBX on the old password; the moment it is refused, the new one
        while _code(api_url, name, "rotate-old-password") == "404":
            pass  # (each from the cache: no argon2, no failed login counted)
        after.append(_code(api_url, name, "rotate-new-password"))

    poller = threading.Thread(target=poll)
    poller.start()
    result = mailgate(
        "user", "passwd", name, "--password-stdin", env=env, input="rotate-new-password\n"
    )
    poller.join(60)
    assert result.exit_code == 0, result.output
    assert after == ["404"]  # when the old one stopped working, the new one already worked
    assert _code(api_url, name, "rotate-new-password") == "404"
    assert _code(api_url, name, "rotate-old-password") == "305"


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
