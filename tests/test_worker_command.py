"""``mailgate worker``: the Procfile's worker line, one Celery process per core (or as told)."""

from __future__ import annotations

import signal
from pathlib import Path

import psutil

from mailgate.config import Settings
from mailgate.jobs import QUEUE
from mailgate.run import worker_argv
from tests.support import VENV_BIN, RedisServer, Service, mailgate_env, wait_for

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


def test_several_processes_start_and_stop_together(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + "/5"  # a database no other worker consumes
    env = mailgate_env(tmp_path, url, "smtp://127.0.0.1:9")
    args = [
        str(VENV_BIN / "mailgate"),
        "worker",
        "--processes",
        "2",
        "--name",
        "pair",
        "--without-mingle",
        "--without-gossip",
    ]
    service = Service("workers", args, env, tmp_path / "workers.log").start()
    try:
        wait_for(lambda: service.output().count("ready.") >= 2, 90, "both workers ready")
        assert "pair-1@" in service.output() and "pair-2@" in service.output()
        assert service.proc is not None
        children = psutil.Process(service.proc.pid).children()
        assert len(children) == 2
        # SIGTERM to the main process alone (systemd's KillMode=mixed): it stops both.
        service.proc.send_signal(signal.SIGTERM)
        assert service.proc.wait(30) == 0
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive
    finally:
        service.stop()
