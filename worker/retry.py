"""The retry policy: exponential back-off with jitter, bounded by attempts and a deadline."""

from __future__ import annotations

import random


def backoff(attempt: int, base: float, cap: float, rand: random.Random | None = None) -> float:
    """Delay before the attempt after ``attempt`` (1-based): base·2^(n-1), ±50 % jitter, capped.

    The jitter spreads a burst of failures (an SMTP outage) so the retries do not return as one
    wave.
    """
    rng = rand or random
    exponent = min(attempt - 1, 30)
    delay = min(cap, base * (2**exponent))
    return float(min(cap, delay * rng.uniform(0.5, 1.5)))


def give_up_reason(
    attempt: int, max_attempts: int, created_at: float, next_at: float, deadline: float
) -> str | None:
    """Why no further attempt may be made, or None when one may."""
    if attempt >= max_attempts:
        return f"gave up after {attempt} attempts"
    if next_at > created_at + deadline:
        return "expired"
    return None
