"""Break each guarantee's mechanism in turn and check that the tests notice.

Each mutant is one targeted edit of the code behind a guarantee: on the delivery side the claim,
the final check, the attempt count, the deadline, the content drop, the TTL, the due-set lease;
on the API side the idempotency key, the send rate, the login throttle and its slow lane, the
cap on password checks, the owner and sender checks, the quota of e-mails not yet final. It is
applied to a temporary copy of the working tree, never to the checkout, and the tests that guard
that mechanism (all of them part of ``make test``) run against the copy. A mutant is *killed*
when those tests fail. The run first checks that the same tests pass on the unmutated copy.

    python tools/mutate.py            # every mutant; exit 1 if any survives
    python tools/mutate.py --only claim-nx --keep
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
G = "tests/test_guarantees.py::"
POISON = "tests/system/test_faults.py::test_a_poison_message_ends_failed_instead_of_looping"
API = "tests/test_api.py::"
REST = "tests/test_rest.py::"
SEC = "tests/test_security.py::"
QUOTA = "tests/test_quota.py::"


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    edits: tuple[tuple[str, str, str], ...]
    """(file, the original text, which must occur exactly once; its replacement)."""
    tests: tuple[str, ...]


MUTANTS = [
    Mutant(
        "claim-nx", "the claim is taken without NX (a second worker gets it too)",
        (("mailgate/status/scripts.py", "ARGV[1], 'NX', 'PX'", "ARGV[1], 'PX'"),),
        (G + "test_a_second_claim_on_an_email_being_sent_is_refused",
         G + "test_two_workers_racing_for_one_email_send_it_once"),
    ),
    Mutant(
        "final-check", "a record already Sent or Failed is attempted again",
        (("mailgate/status/scripts.py",
          "if status == 'Sent' or status == 'Failed' or status == 'Cancelled' or status == "
          "'Bounced'\n   or status == 'PartlyBounced' then return {'already-final'} end\n", ""),),
        (G + "test_a_final_email_is_acknowledged_without_sending",),
    ),
    Mutant(
        "count-after-smtp", "the attempt is counted with the outcome, after SMTP",
        (("mailgate/status/scripts.py", "redis.call('HINCRBY', KEYS[1], 'attempts', 1)\n", ""),
         ("mailgate/status/scripts.py", "  redis.call('RPUSH', o.log, o.entry)\n",
          "  redis.call('RPUSH', o.log, o.entry)\n"
          "  redis.call('HINCRBY', o.key, 'attempts', 1)\n")),
        (G + "test_the_attempt_is_counted_before_smtp_is_touched",
         G + "test_an_email_whose_attempts_are_used_up_fails_without_smtp", POISON),
    ),
    Mutant(
        "no-attempt-bound", "the attempts that died with their worker are not checked",
        (("worker/delivery.py", "if record.attempts > s.max_attempts:", "if False:"),),
        (G + "test_an_email_whose_attempts_are_used_up_fails_without_smtp", POISON),
    ),
    Mutant(
        "deadline-check", "the retry deadline is not checked before an attempt",
        (("worker/delivery.py", "if now > record.since + s.retry_deadline_seconds:",
          "if False:"),),
        (G + "test_an_email_past_its_deadline_fails_expired_without_smtp",),
    ),
    Mutant(
        "deadline-give-up", "a retry may be scheduled after the deadline",
        (("worker/retry.py", "if next_at > created_at + deadline:", "if False:"),),
        ("tests/test_retry.py::test_give_up_by_attempts_and_by_deadline",
         G + "test_a_retry_that_would_fall_after_the_deadline_fails_now"),
    ),
    Mutant(
        "content-drop", "a Sent e-mail keeps its content",
        (("mailgate/status/store.py", 'drop=("job", "next_attempt_at")',
          'drop=("next_attempt_at",)'),),
        (G + "test_a_sent_email_keeps_no_content",
         G + "test_the_worker_drops_the_content_of_what_it_sent"),
    ),
    Mutant(
        "ttl-on-create", "a new record never expires",
        (("mailgate/status/scripts.py", "redis.call('EXPIRE', KEYS[1], ARGV[1])\n", ""),),
        (G + "test_a_status_record_expires_after_its_ttl",),
    ),
    Mutant(
        "ttl-on-change", "an outcome does not renew the record's TTL",
        (("mailgate/status/scripts.py",
          "  redis.call('EXPIRE', o.key, ttl)\n  redis.call('EXPIRE', o.log, ttl)\n", ""),),
        (G + "test_the_ttl_counts_from_the_last_change",
         "tests/test_batched_store.py::test_outcomes_write_what_the_plain_store_writes"),
    ),
    Mutant(
        "content-drop-write", "the outcome write drops no field (a Sent e-mail keeps its content)",
        (("mailgate/status/scripts.py",
          "  if #o.drop > 0 then redis.call('HDEL', o.key, unpack(o.drop)) end\n", ""),),
        (G + "test_a_sent_email_keeps_no_content",
         "tests/test_batched_store.py::test_outcomes_write_what_the_plain_store_writes"),
    ),
    Mutant(
        "due-lease", "taking due e-mails does not lease them (two schedulers publish both)",
        (("mailgate/status/scripts.py",
          "for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[3], id) end\n", ""),),
        (G + "test_a_due_email_is_taken_by_one_scheduler_until_its_lease_ends",
         G + "test_concurrent_schedulers_never_take_the_same_email"),
    ),
    # The API side.
    Mutant(
        "idempotency-nx", "an idempotency key is bound by a GET then a SET, not SET NX",
        (("mailgate/status/store.py", "if self.redis.set(name, value, nx=True, ex=ttl):",
          "if self.redis.get(name) is None and self.redis.set(name, value, ex=ttl):"),),
        (API + "test_concurrent_calls_with_one_idempotency_key_queue_one_email",),
    ),
    Mutant(
        "send-rate", "an account's send rate is not enforced",
        (("mailgate/status/scripts.py",
          "  if oldest and tonumber(oldest) >= now - window then return {'rate'} end\n", ""),),
        (API + "test_rate_limit_answers_429",
         REST + "test_over_the_send_rate_is_429_with_retry_after",
         QUOTA + "test_the_send_rate_counts_only_the_emails_written"),
    ),
    Mutant(
        "suppression-check", "a suppressed recipient is not looked up in the create step",
        (("mailgate/status/scripts.py",
          "  if found then return {'suppressed', i - 7, found} end\n", ""),),
        (QUOTA + "test_a_suppressed_recipient_is_refused_by_the_create_step_writing_nothing",
         "tests/test_bounces.py::test_a_hard_bounced_address_is_refused_at_acceptance_until_removed"),
    ),
    Mutant(
        "login-throttle", "a refused login reservation lets the password check run anyway",
        (("api/ratelimit.py", "        if not taken:\n", "        if False:\n"),),
        (SEC + "test_brute_force_is_cut_off_fast_without_hashing",),
    ),
    Mutant(
        "login-client-scope", "failed logins of one address and user name are not limited",
        (("api/ratelimit.py", "if full(2) then return 0 end\n", ""),),
        (SEC + "test_brute_force_is_cut_off_fast_without_hashing",
         SEC + "test_parallel_guesses_never_run_more_argon2_checks_than_the_limit"),
    ),
    Mutant(
        "slow-lane-per-user", "one slow lane per user name: a guesser holding it locks owners out",
        (("api/ratelimit.py", 'f"mailgate:login:overflow:{user}:{digest(network(address))}"',
          'f"mailgate:login:overflow:{user}"'),),
        (SEC + "test_an_owner_on_a_new_address_gets_in_while_the_guesser_holds_the_slow_lane",),
    ),
    Mutant(
        "password-check-cap", "password checks run without a cap (64 MiB each)",
        (("mailgate/users.py", "threading.BoundedSemaphore(concurrent_checks)",
          "threading.BoundedSemaphore(10_000)"),),
        (SEC + "test_no_more_password_checks_run_at_once_than_the_cap",
         SEC + "test_a_check_that_waits_past_the_bound_is_503_and_cached_credentials_never_wait"),
    ),
    Mutant(
        "owner-check", "any account reads and cancels any e-mail",
        (("api/emails.py", "if record is None or record.owner != account.name:",
          "if record is None:"),),
        (API + "test_status_is_only_for_the_owner", REST + "test_another_accounts_email_is_404"),
    ),
    Mutant(
        "sender-check", "the sender is not checked against the account's globs",
        (("api/emails.py",
          "if not account.may_send_as(bare(sender), svc.settings.default_sender):",
          "if False:"),),
        (API + "test_errors_answer_their_code_and_enqueue_nothing",),
    ),
    Mutant(
        "sender-globs", "every sender matches an account's globs",
        (("mailgate/users.py",
          "return any(fnmatchcase(address, pattern.lower()) for pattern in self.senders)",
          "return True"),),
        ("tests/test_users.py::test_sender_globs",
         API + "test_errors_answer_their_code_and_enqueue_nothing"),
    ),
    Mutant(
        "quota-check", "an account's count of e-mails not yet final is not checked",
        (("mailgate/status/scripts.py",
          "if ARGV[7] ~= '0' and emails >= tonumber(ARGV[7]) then return {'emails'} end\n", ""),),
        (QUOTA + "test_over_the_quota_nothing_is_written",
         QUOTA + "test_concurrent_accepts_never_pass_the_quota",
         QUOTA + "test_over_the_account_s_count_is_429_naming_it_until_one_is_cancelled"),
    ),
    Mutant(
        "quota-settle-once", "a repeated final outcome counts its e-mail down again",
        (("mailgate/status/scripts.py",
          "  if redis.call('HDEL', key, 'pending') == 0 then return end\n",
          "  redis.call('HDEL', key, 'pending')\n"),),
        (QUOTA + "test_an_email_is_counted_until_it_is_final_and_counted_down_once",),
    ),
]  # fmt: skip


def copy_tree(dest: Path) -> None:
    """The working tree as it is now (tracked and new files, not ignored ones) into ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def apply(tree: Path, mutant: Mutant) -> None:
    for file, original, replacement in mutant.edits:
        path = tree / file
        text = path.read_text()
        if text.count(original) != 1:
            raise SystemExit(f"{mutant.name}: {original!r} is not exactly once in {file}")
        path.write_text(text.replace(original, replacement))


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float]:
    """'passed', 'failed' or 'timeout', and the seconds it took, for ``tests`` in ``tree``."""
    # The copy's packages come first on the path, ahead of the checkout's editable install,
    # in pytest and in every process the tests start.
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    check = subprocess.run(
        [sys.executable, "-c", "import mailgate, worker; print(mailgate.__file__)"],
        cwd=tree, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    if not check.stdout.startswith(str(tree)):
        raise SystemExit(f"the copy is not the code under test: {check.stdout}")
    started = time.monotonic()
    args = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    try:
        result = subprocess.run(args, cwd=tree, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - started
    verdict = {0: "passed", 1: "failed"}.get(result.returncode)
    if verdict is None:
        sys.stderr.write(result.stdout.decode(errors="replace")[-3000:])
        raise SystemExit(f"pytest could not run ({result.returncode}): {' '.join(tests)}")
    return verdict, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="run this mutant only (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per test run")
    options = parser.parse_args()
    chosen = [m for m in MUTANTS if not options.only or m.name in options.only]
    if not chosen:
        raise SystemExit(f"no such mutant; known: {', '.join(m.name for m in MUTANTS)}")
    every_test = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
    base = Path(tempfile.mkdtemp(prefix="mailgate-mutate-"))
    rows: list[tuple[str, str, str, float]] = []
    try:
        control = base / "control"
        copy_tree(control)
        verdict, seconds = run_tests(control, every_test, options.timeout)
        print(f"control (no mutant): the {len(every_test)} tests {verdict} in {seconds:.0f}s")
        if verdict != "passed":
            return 2
        for mutant in chosen:
            tree = base / mutant.name
            copy_tree(tree)
            apply(tree, mutant)
            verdict, seconds = run_tests(tree, mutant.tests, options.timeout)
            result = "survived" if verdict == "passed" else "killed"
            rows.append((mutant.name, mutant.what, result, seconds))
            print(f"{mutant.name:18} {result:8} {seconds:5.0f}s  {mutant.what}", flush=True)
    finally:
        if options.keep:
            print(f"copies kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print("\n| mutant | what it breaks | result |\n|---|---|---|")
    for name, what, result, _ in rows:
        print(f"| `{name}` | {what} | {result} |")
    survivors = [name for name, _, result, _ in rows if result == "survived"]
    if survivors:
        print(f"\nsurvived: {', '.join(survivors)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
