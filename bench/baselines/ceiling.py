"""Baseline (c): smtplib sending N mails over one reused connection.

``python -m bench.baselines.ceiling --port P --count N [--shape S --voicemail WAV]`` prints
one JSON line. Each mail (the shapes of ``S`` in turn, bench.payload) is built with the
``email`` package (own Message-ID and Date) and sent in turn, in one process and one thread:
the most one Python client can push through this SMTP server, with no queue in between.
"""

from __future__ import annotations

import argparse
import json
import smtplib
import time
import uuid
from pathlib import Path

from bench import payload


def send_all(
    port: int, count: int, kind: str = "plain", voicemail: Path | None = None
) -> dict[str, float]:
    """Send ``count`` mails over one connection; the time it took."""
    shapes = payload.shapes(kind)
    started_at = time.time()
    begin = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        for n in range(count):
            shape = shapes[n % len(shapes)]
            client.send_message(payload.build(str(uuid.uuid4()), "ceiling.local", shape, voicemail))
    seconds = time.perf_counter() - begin
    return {"count": count, "seconds": seconds, "started_at": started_at}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--shape", choices=payload.KINDS, default="plain")
    parser.add_argument("--voicemail", type=Path, help="the WAV the voicemail shape attaches")
    args = parser.parse_args()
    print(json.dumps(send_all(args.port, args.count, args.shape, args.voicemail)), flush=True)


if __name__ == "__main__":
    main()
