"""Nothing stays dead: ``mailgate supervise`` and the Procfile under honcho start again what
exits, and still stop cleanly on a signal."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support import VENV_BIN, Service, answers, free_port, wait_for

pytestmark = pytest.mark.integration  # real processes of its own

ROOT = Path(__file__).resolve().parents[2]


def supervised(tmp_path: Path, script: str, name: str = "child") -> Service:
    args = [str(VENV_BIN / "mailgate"), "supervise", "--", sys.executable, "-c", script]
    return Service(name, args, dict(os.environ), tmp_path / f"{name}.log").start()


def test_a_child_that_exits_is_started_again(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    service = supervised(tmp_path, f"import sys; open({str(runs)!r}, 'a').write('x'); sys.exit(3)")
    try:
        wait_for(lambda: runs.exists() and len(runs.read_text()) >= 2, 15, "a second start")
        assert re.search(r"exited with code 3; starting it again in 1 s", service.output())
        # The second run has exited too: the stop below comes during the (2 s) pause.
        service.wait_output(r"exited with code 3; starting it again in 2 s", 15)
        assert service.proc is not None and service.proc.poll() is None
    finally:
        assert service.stop(10) == 3  # stopped during the pause: the child's last code


TRAP = """
import signal, sys, time
def bye(signum, frame):
    open(sys.argv[1], 'a').write(str(signum) + '\\n')
    time.sleep(0.3)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
signal.signal(signal.SIGINT, bye)
open(sys.argv[1] + '.ready', 'w').close()
while True:
    time.sleep(0.1)
"""


@pytest.mark.parametrize(
    ("sig", "passed"),
    [(signal.SIGTERM, signal.SIGTERM), (signal.SIGINT, signal.SIGINT),
     (signal.SIGHUP, signal.SIGTERM)],  # a Celery worker would take SIGHUP as "restart"
    ids=["sigterm", "sigint", "sighup-as-sigterm"],
)  # fmt: skip
def test_a_signal_to_the_group_reaches_the_child_once_and_stops_everything(
    tmp_path: Path, sig: int, passed: int
) -> None:
    got = tmp_path / "signals"
    args = [str(VENV_BIN / "mailgate"), "supervise", "--", sys.executable, "-c", TRAP, str(got)]
    service = Service("trap", args, dict(os.environ), tmp_path / "trap.log").start()
    assert service.proc is not None
    wait_for(lambda: Path(f"{got}.ready").exists(), 15, "the child to start")
    child = psutil.Process(service.proc.pid).children()[0]
    service.signal(sig)  # to the whole process group, as honcho and a terminal's Ctrl-C do
    assert service.proc.wait(10) == 0
    assert got.read_text().split() == [str(int(passed))]  # once, not once per group member
    psutil.wait_procs([child], timeout=5)
    assert not child.is_running()
    assert "starting it again" not in service.output()


@pytest.fixture
def procfile_gateway(env: dict[str, str], tmp_path: Path, users: object) -> Iterator[Service]:
    """The Procfile's web and worker lines under honcho, as a user would start them."""
    port = free_port()
    honcho_env = {
        **env,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "PORT": str(port),
        "MAILGATE_PORT": str(port),
    }
    args = [
        str(VENV_BIN / "honcho"),
        "-f",
        str(ROOT / "Procfile"),
        "-d",
        str(ROOT),
        "start",
        "web",
        "worker",
    ]
    service = Service("honcho", args, honcho_env, tmp_path / "honcho.log").start()
    service.port = port  # type: ignore[attr-defined]
    yield service
    if service.proc is not None and service.proc.poll() is None:
        service.proc.send_signal(signal.SIGINT)
        service.proc.wait(30)


def _celery_workers(root: psutil.Process) -> list[psutil.Process]:
    found = []
    for proc in root.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # one that exits while we look
            line = " ".join(proc.cmdline())
            if "celery" in line and "worker.app" in line and "supervise" not in line:
                found.append(proc)
    return found


def test_procfile_a_killed_worker_comes_back_and_the_api_stays(procfile_gateway: Service) -> None:
    service = procfile_gateway
    port: int = service.port  # type: ignore[attr-defined]
    assert service.proc is not None
    root = psutil.Process(service.proc.pid)
    wait_for(lambda: answers(f"http://127.0.0.1:{port}/healthz"), 60, "the API")
    first = wait_for(lambda: _celery_workers(root), 60, "the worker")[0]
    service.wait_output(r"ready\.", 60)
    ready_before = service.output().count("ready.")
    killed_at = time.time()
    first.kill()
    # `mailgate worker` stops its other processes when one dies, and the supervisor starts it
    # again: wait for worker processes born after the kill, not for the kill's survivors.
    wait_for(lambda: "starting it again" in service.output(), 60, "the supervisor's restart")
    again = wait_for(lambda: _born_after(_celery_workers(root), killed_at), 60, "a new worker")
    assert again and first.pid not in [p.pid for p in again]
    wait_for(
        lambda: service.output().count("ready.") > ready_before, 60, "the new worker to be ready"
    )
    assert answers(f"http://127.0.0.1:{port}/healthz"), "the API stopped with the worker"
    assert service.proc.poll() is None


def _born_after(processes: list[psutil.Process], moment: float) -> list[psutil.Process]:
    """Those started after ``moment`` (one that died meanwhile is no longer there to ask)."""
    born = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.create_time() > moment:
                born.append(process)
    return born


SLEEPER = "import time; time.sleep(600)"


def _descendants(root: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return list(root.children(recursive=True))
    return []


@pytest.mark.parametrize("end", ["sighup-to-the-session", "sigkill-to-honcho"])
def test_nothing_outlives_honcho(tmp_path: Path, end: str) -> None:
    """A closed terminal (SIGHUP to honcho's session) or a SIGKILL to honcho: each supervisor
    and each command under it goes too, also past the shell a Procfile line runs in."""
    procfile = tmp_path / "Procfile"
    sleeper = f"{sys.executable} -c {SLEEPER!r}"
    procfile.write_text(
        f"plain: mailgate supervise -- {sleeper}\nexecd: exec mailgate supervise -- {sleeper}\n"
    )
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    args = [str(VENV_BIN / "honcho"), "-f", str(procfile), "start"]
    service = Service("honcho", args, env, tmp_path / "honcho.log").start()
    assert service.proc is not None
    root = psutil.Process(service.proc.pid)

    def sleepers() -> list[psutil.Process]:
        found = []
        for proc in _descendants(root):
            with contextlib.suppress(psutil.Error):
                line = proc.cmdline()  # the command itself, not the shell or supervisor of it
                if line[-1:] == [SLEEPER] and "mailgate" not in " ".join(line):
                    found.append(proc)
        return found

    wait_for(lambda: len(sleepers()) == 2, 60, "both commands to run")
    everything = _descendants(root)
    if end == "sighup-to-the-session":
        service.signal(signal.SIGHUP)
    else:
        service.proc.kill()
    service.proc.wait(10)
    _, alive = psutil.wait_procs(everything, timeout=30)
    assert not alive, f"left running: {[' '.join(p.cmdline()) for p in alive]}"
