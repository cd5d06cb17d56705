"""Facts about the machine a run came from, and the memory of the processes it measured."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import psutil  # type: ignore[import-untyped]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> dict[str, str | int | float]:
    """CPU, cores, RAM, OS and Python: what a reader needs to weigh the figures."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 1,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }


def rss_mb(pid: int, children: bool = True) -> list[float]:
    """Resident memory (MiB) of a process and, optionally, every descendant, leader first."""
    leader = psutil.Process(pid)
    processes = [leader, *(leader.children(recursive=True) if children else [])]
    sizes = []
    for process in processes:
        try:
            sizes.append(round(process.memory_info().rss / 2**20, 1))
        except psutil.NoSuchProcess:
            continue
    return sizes


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and every live descendant."""
    leader = psutil.Process(pid)
    total = 0.0
    for process in [leader, *leader.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total
