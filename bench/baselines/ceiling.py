"""Baseline (c): smtplib sending N of the same mails over one reused connection.

``python -m bench.baselines.ceiling --port P --count N`` prints one JSON line. Each mail is
built (own Message-ID and Date) and sent in turn, in one process and one thread: the most one
Python client can push through this SMTP server, with no queue in between.
"""

from __future__ import annotations

import argparse
import json
import smtplib
import time
import uuid

from bench import payload


def send_all(port: int, count: int) -> dict[str, float]:
    """Send ``count`` mails over one connection; the time it took."""
    started_at = time.time()
    begin = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        for _ in range(count):
            client.send_message(payload.build(str(uuid.uuid4()), "ceiling.local"))
    seconds = time.perf_counter() - begin
    return {"count": count, "seconds": seconds, "started_at": started_at}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    print(json.dumps(send_all(args.port, args.count)), flush=True)


if __name__ == "__main__":
    main()
