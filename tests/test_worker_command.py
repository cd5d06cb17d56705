"""``mailgate worker``: the Procfile's worker line, one Celery process per core (or as told)."""

from __future__ import annotations

from pathlib import Path

from mailgate.cli.procs import worker_argv
from mailgate.config import Settings
from mailgate.jobs import QUEUE

ROOT = Path(__file__).resolve().parent.parent


def test_every_way_of_starting_the_worker_goes_through_mailgate_worker() -> None:
    procfile = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines())
    assert procfile["worker"] == "mailgate supervise -- mailgate worker"
    assert 'command: ["mailgate", "worker"]' in (ROOT / "docker-compose.yml").read_text()
    settings = Settings.from_env({"MAILGATE_WORKER_CONCURRENCY": "7"})
    argv = worker_argv(settings, "n@%h", ["--without-gossip"])
    assert argv[argv.index("-Q") + 1] == QUEUE  # the queue the API publishes to
    assert argv[argv.index("--concurrency") + 1] == "7"
    assert argv[argv.index("-n") + 1] == "n@%h" and "-E" in argv  # task events for Flower
    assert argv[-1] == "--without-gossip"
