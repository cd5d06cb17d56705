"""The shared parts of a run: Redis, the sink, the benchmark account, the servers' settings."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from bench import payload
from bench.load import Generator
from bench.machine import rss_mb
from bench.phases import NAIVE_QUEUE, Context
from bench.plan import Plan
from bench.postfix_sink import SMTP_SINK, PostfixSink
from bench.servers import (
    Process,
    Stack,
    redis_url,
    start_gunicorn_sync,
    start_redis,
    start_web,
    wait_for,
)
from bench.sink import SinkClient
from mailgate.cli.dev.embedded import free_port
from mailgate.status import DUE_KEY
from mailgate.users import UserStore

BASELINE_APPS = {
    "bare_flask": "bench.baselines.bare:app",
    "naive_celery": "bench.baselines.naive_celery:web",
}


@dataclass
class Gateway:
    """Starts mailgate's API and the baseline endpoints with the right environment."""

    stack: Stack
    context: Context
    redis_url: str

    def start_api(self) -> tuple[Process, str]:
        """The Procfile's ``web`` line: ``mailgate web`` (granian, one process per core)."""
        return start_web(self.stack, "web", self.context.gateway_env)

    def start_baseline(self, name: str) -> tuple[Process, str]:
        """A baseline app served the stock way: gunicorn, 2 sync workers."""
        env = self.context.naive_env if name == "naive_celery" else self.context.gateway_env
        return start_gunicorn_sync(self.stack, name, BASELINE_APPS[name], env)

    def queued(self) -> int:
        """E-mails the API accepted and no worker has finished (the due set)."""
        return int(self.context.redis.zcard(DUE_KEY))

    def naive_queued(self) -> int:
        """Tasks the naive endpoint published (its worker is not running during accept)."""
        return int(self.context.redis.llen(NAIVE_QUEUE))

    def api_rss(self, server: Process) -> list[float]:
        return rss_mb(server.pid)


def start_sink(stack: Stack, module: str = "bench.sink", *extra: str) -> SinkClient:
    """A counting Python sink (``bench.sink``, or ``bench.slow_sink``) in its own process."""
    sink = SinkClient(free_port(), free_port())
    args = [sys.executable, "-m", module, "--port", str(sink.smtp_port),
            "--control-port", str(sink.control_port), *extra]  # fmt: skip
    process = stack.start(module.rsplit(".", 1)[-1], args)

    def answers() -> bool:
        process.check_alive()
        try:
            sink.count()
        except OSError:
            return False
        return True

    wait_for(answers, 30, f"the SMTP sink {module}")
    return sink


def start_sinks(stack: Stack, plan: Plan) -> dict[str, Any]:
    """The local sink (smtp-sink, else bench.sink) and the 20 ms relay."""
    local: Any = PostfixSink(stack) if SMTP_SINK else start_sink(stack)
    relay = start_sink(stack, "bench.slow_sink", "--delay-ms", str(plan.relay_delay_ms))
    return {"local": local, "relay": relay}


def start_parts(stack: Stack, plan: Plan, generator: Generator) -> tuple[Context, Gateway]:
    """Redis, the sinks and a benchmark account; the context every phase runs in."""
    client = start_redis(stack)
    sinks = start_sinks(stack, plan)
    users = stack.workdir / "users.toml"
    UserStore(users).add(payload.USER, payload.PASSWORD)
    attachments = stack.workdir / "attachments"
    voicemail = payload.write_voicemail(attachments)
    url = redis_url(client)
    port = sinks["local"].smtp_port
    gateway_env = {
        "MAILGATE_REDIS_URL": url,
        "MAILGATE_SMTP_URL": f"smtp://127.0.0.1:{port}",
        "MAILGATE_USERS_FILE": str(users),
        "MAILGATE_ATTACHMENT_ROOTS": str(attachments),
        # The backlogs (20,000) and a 20 s accept run hold more e-mails not yet final than the
        # default quota (10,000; 1 GiB, a few thousand voicemails): past it every answer would
        # be a cheap 429. The quota is still checked (the create script reads the counts
        # either way), just never reached.
        "MAILGATE_MAX_PENDING_EMAILS": "0",
        "MAILGATE_MAX_PENDING_BYTES": "0",
    }
    naive_env = {**gateway_env, "NAIVE_BROKER_URL": url, "NAIVE_SMTP_PORT": str(port)}
    context = Context(plan, stack, client, sinks, generator, gateway_env, naive_env, voicemail)
    return context, Gateway(stack, context, url)
