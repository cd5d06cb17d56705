"""The PNG chart: mailgate beside its baselines, for accept requests/s and drain mails/s (the
mix, each shape, the 20 ms relay).

Bars are medians, whiskers the min-max of the runs.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: write the file only
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from bench.report import Results

MAILGATE, BASELINE = "#2f6db5", "#9aa5b1"


def _bars(ax: Axes, title: str, unit: str, entries: list[tuple[str, dict[str, float]]]) -> None:
    names = [name for name, _ in entries]
    medians = [f["median"] for _, f in entries]
    low = [f["median"] - f["min"] for _, f in entries]
    high = [f["max"] - f["median"] for _, f in entries]
    colours = [MAILGATE if name.startswith("mailgate") else BASELINE for name in names]
    bars = ax.bar(names, medians, color=colours, yerr=[low, high], capsize=4)
    ax.bar_label(bars, labels=[f"{m:,.0f}" for m in medians], padding=3, fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(unit)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.margins(y=0.15)


def draw(results: Results, path: Path) -> None:
    """Write the chart of ``results`` to ``path``."""
    accept = results.get("accept", {})
    drain = results.get("drain", {})
    accept_entries = [
        (label, accept[key]["rps"])
        for key, label in (
            ("mailgate", "mailgate"),
            ("bare_flask", "bare Flask"),
            ("naive_celery", "naive Celery view"),
        )
        if "rps" in accept.get(key, {})
    ]
    drain_keys = [("mailgate", "mailgate")]
    drain_keys += [(k, f"mailgate x{k.removeprefix('mailgate_x')}") for k in sorted(drain)
                   if k.startswith("mailgate_x")]  # fmt: skip
    drain_keys += [("naive_celery", "naive Celery"), ("smtplib_ceiling", "smtplib 1 conn.")]
    drain_entries = [(label, drain[key]["rate"]) for key, label in drain_keys
                     if "rate" in drain.get(key, {})]  # fmt: skip
    relay = results.get("relay", {})
    relay_entries = [(label, relay[key]["rate"]) for key, label in
                     (("mailgate", "mailgate"), ("naive_celery", "naive Celery"))
                     if "rate" in relay.get(key, {})]  # fmt: skip
    shape_entries = [
        (f"{who} {shape}", section[key]["rate"])
        for shape, section in results.get("shapes", {}).items()
        for key, who in (("mailgate", "mailgate"), ("naive_celery", "naive"))
        if "rate" in section.get(key, {})
    ]
    figure, axes = plt.subplots(2, 2, figsize=(14, 8.4))
    (left, right), (third, fourth) = axes
    conns = results["plan"]["connections"]
    _bars(left, f"accept: SendEmail at {conns} connections", "requests/s", accept_entries)
    backlog = results["plan"]["backlog"]
    _bars(right, f"drain: backlog of {backlog:,}, the mix, to smtp-sink", "mails/s", drain_entries)
    delay = results["plan"].get("relay_delay_ms", 20)
    _bars(third, f"drain: {delay:g} ms relay, the mix", "mails/s", relay_entries)
    _bars(fourth, "drain: each shape alone, to smtp-sink", "mails/s", shape_entries)
    m = results["machine"]
    figure.suptitle(f"mailgate benchmark ({results['plan']['mode']}) — {m['cpu']}, "
                    f"{m['cores']} cores, Python {m['python']}", fontsize=10)  # fmt: skip
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
