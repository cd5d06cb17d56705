"""``mailgate worker --processes N``: the real processes start and stop together."""

from __future__ import annotations

import signal
from pathlib import Path

import psutil

from tests.support import VENV_BIN, RedisServer, Service, mailgate_env, wait_for


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
