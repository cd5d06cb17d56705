"""``python -m bench.accept_cpu``: the API's CPU time per SendEmail, in-process, for each shape.

The app (``api.create_app``) is called as a WSGI application, without HTTP and without Flask's
test client, against a Redis of its own (as ``mailgate run`` starts it) and an account of its
own: the plain request's GET and the accented, HTML and voicemail forms POSTed (bench.payload).
Each figure is the best of ``--rounds`` rounds of ``--requests`` requests, in CPU time of this
process (``time.process_time``): on a shared machine wall time mostly measures the others.
``--profile SHAPE`` adds a cProfile of that shape, sorted by cumulative time. The log lines go
to a file, as a server's go to its log.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from werkzeug.test import EnvironBuilder

from bench import payload
from bench.servers import Stack, child_env, redis_url, start_redis
from mailgate.users import UserStore

FORM = "application/x-www-form-urlencoded"


def environ(
    method: str, path: str, query: str = "", body: str = ""
) -> tuple[dict[str, Any], bytes]:
    """A WSGI environ for one request (its input is replaced per call) and the body's bytes."""
    builder = EnvironBuilder(
        path=path,
        query_string=query,
        method=method,
        data=body or None,
        content_type=FORM if body else None,
    )
    env = builder.get_environ()
    env["REMOTE_ADDR"] = "127.0.0.1"
    return env, body.encode()


def requests(voicemail: Path) -> dict[str, tuple[dict[str, Any], bytes]]:
    """Each shape measured: the plain GET and three forms POSTed."""
    found = {"get": environ("GET", "/api", payload.query())}
    for shape in ("accented", "html", "voicemail"):
        found[shape] = environ("POST", "/api", body=payload.form(payload.SHAPES[shape], voicemail))
    return found


def caller(
    app: Callable[..., Iterable[bytes]], env: dict[str, Any], body: bytes
) -> Callable[[int], None]:
    """A function that sends the request ``n`` times and checks the last answer is Code 200."""

    def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> None:
        return None

    def run(n: int) -> None:
        answer = b""
        for _ in range(n):
            answer = b"".join(app({**env, "wsgi.input": io.BytesIO(body)}, start_response))
        if b"<Code>200</Code>" not in answer:
            raise SystemExit(f"not accepted: {answer[:300]!r}")

    return run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.accept_cpu", description=__doc__)
    parser.add_argument("--requests", type=int, default=1000, help="per round (1,000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per shape (3)")
    parser.add_argument("--profile", choices=("get", "accented", "html", "voicemail"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-accept-cpu-"))
    stack = Stack(work, child_env())
    try:
        client = start_redis(stack)
        users = work / "users.toml"
        UserStore(users).add(payload.USER, payload.PASSWORD)
        voicemail = payload.write_voicemail(work / "attachments")
        os.environ.update(
            {
                "MAILGATE_REDIS_URL": redis_url(client),
                "MAILGATE_USERS_FILE": str(users),
                "MAILGATE_ATTACHMENT_ROOTS": str(voicemail.parent),
            }
        )
        from api import create_app

        app = create_app()
        log_file = (work / "api.log").open("w")
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(log_file)
        runs = {name: caller(app, *request) for name, request in requests(voicemail).items()}
        for run in runs.values():
            run(50)  # the password's argon2 check and the caches, before any figure
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, run in runs.items():
                started = time.process_time()
                run(args.requests)
                spent = (time.process_time() - started) * 1000 / args.requests
                best[name] = min(best.get(name, spent), spent)
                client.flushdb()
        for name, ms in best.items():
            print(f"{name:10s} {ms:.3f} ms CPU per request (best of {args.rounds})")
        if args.profile:
            profile = cProfile.Profile(time.process_time)
            profile.runcall(runs[args.profile], args.requests)
            pstats.Stats(profile).sort_stats("cumulative").print_stats(50)
    finally:
        stack.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
