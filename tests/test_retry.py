"""The back-off policy."""

from __future__ import annotations

import random

from worker.retry import backoff, give_up_reason


def test_backoff_grows_exponentially_within_jitter() -> None:
    rng = random.Random(7)
    for attempt in range(1, 8):
        nominal = 30 * 2 ** (attempt - 1)
        delay = backoff(attempt, 30, 10_000, rng)
        assert nominal * 0.5 <= delay <= nominal * 1.5


def test_backoff_is_capped() -> None:
    assert backoff(40, 30, 3600, random.Random(1)) <= 3600


def test_jitter_spreads_delays() -> None:
    rng = random.Random(3)
    assert len({round(backoff(3, 30, 3600, rng), 3) for _ in range(20)}) > 10


def test_give_up_by_attempts_and_by_deadline() -> None:
    assert give_up_reason(3, 10, 0, 100, 86400) is None
    assert give_up_reason(10, 10, 0, 100, 86400) == "gave up after 10 attempts"
    assert give_up_reason(2, 10, 0, 90000, 86400) == "expired"
