"""What a run measures and for how long: the quick smoke test and the full benchmark."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    """Every knob of one run; :meth:`full` and :meth:`quick` are the two presets."""

    mode: str
    runs: int
    """Repetitions of each figure; the report gives their median and min-max."""
    backlog: int
    """E-mails queued before a drain starts."""
    accept_seconds: float
    warmup_seconds: float
    """Load before each run. A cold API process verifies the password with argon2 in every
    thread at once (about 3 s here) before its cache holds it: that must not count."""
    e2e_seconds: float
    relay_backlog: int = 1_500
    """E-mails queued before a drain through the 20 ms relay (the naive worker takes ~50 s)."""
    shape_backlog: int = 5_000
    """E-mails queued before the drain of each shape alone but the plain one (which, like the
    mix, takes ``backlog``)."""
    relay_delay_ms: float = 20.0
    """The relay sink's wait before each reply to MAIL, RCPT and DATA."""
    connections: int = 32
    workers: tuple[int, ...] = ()
    """Extra drains with this many worker processes (MAILGATE_WORKER_PROCESSES); the default
    drain runs ``mailgate worker`` as shipped (one process per core)."""
    e2e_rate: str = "auto"
    """Sustained-load rate: auto (0.7 x the measured drain rate), max (closed loop) or a number."""
    accept_only: bool = False
    """Measure the accept figures only (no drains, relay or end-to-end load)."""
    stall_seconds: float = 30.0
    """A drain whose sink count does not move for this long has failed."""

    @classmethod
    def full(cls) -> Plan:
        return cls("full", runs=3, backlog=20_000, accept_seconds=20, warmup_seconds=5,
                   e2e_seconds=60)  # fmt: skip

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            "quick",
            runs=1,
            backlog=2_000,
            accept_seconds=5,
            warmup_seconds=5,
            e2e_seconds=10,
            relay_backlog=500,
            shape_backlog=500,
        )
