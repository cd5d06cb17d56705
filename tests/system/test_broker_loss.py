"""Broker loss at any moment: the worker lives on and every accepted e-mail ends Sent.

The crash this guards against (kombu 5.7.0, Celery 5.7.0): when the Redis connection drops
while the consumer's channel waits on BRPOP with unacknowledged messages, Celery's
``on_connection_error_after_connected`` calls ``connection.collect()`` and then
``connection.close()``. In ``collect()``, the channel's ``close()`` fails at its first step
(reading the pending BRPOP reply off the dead socket), so the channel stays open; ``collect()``
then clears the transport's ``client``. ``close()`` closes the channel again, which now
restores the unacknowledged messages through a new connection pool built from
``transport.client`` (None): ``AttributeError: 'NoneType' object has no attribute
'hostname'``, not a connection error, so Celery calls it unrecoverable and the worker exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery import Celery
from celery.concurrency.thread import TaskPool as ThreadTaskPool
from celery.events.dispatcher import EventDispatcher
from celery.utils.threads import bound_open_broker_sockets
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer as WorkerConsumer
from celery.worker.consumer.consumer import COLLECT_SOCKET_TIMEOUT
from kombu import Connection, Consumer, Exchange, Queue
from kombu.common import ignore_errors
from kombu.message import Message

from mailgate import broker_events, broker_transport
from mailgate.broker import make_celery, publish, redis_task_message
from mailgate.config import Settings
from mailgate.jobs import QUEUE, EmailJob
from mailgate.status import StatusStore
from tests.support import (
    RedisServer,
    Service,
    SmtpServer,
    mailgate_env,
    wait_for,
    worker_args,
)

pytestmark = pytest.mark.integration  # real processes of its own

STOCK = "kombu.transport.redis:Transport"
OURS = "redis"  # once mailgate.broker_transport.install() ran, as make_celery does


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    broker_transport.install()


def test_redis_schemes_use_the_fixed_transports() -> None:
    from kombu import Connection as C

    make_celery(Settings.from_env({"MAILGATE_REDIS_URL": "redis://127.0.0.1:1/0"}))
    for url, cls in [
        ("redis://h/0", broker_transport.Transport),
        ("rediss://h/0", broker_transport.Transport),
        ("sentinel://h:26379", broker_transport.SentinelTransport),
    ]:
        assert C(url).transport_cls in broker_transport.FIXED
        assert type(C(url).transport) is cls
    assert C("rediss://h/0").ssl  # kombu's TLS default for rediss:// still applies


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("broker-loss")) / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def up(broker: RedisServer) -> RedisServer:
    if broker.proc is None or broker.proc.poll() is not None:
        broker.start()
    return broker


def _connection(server: RedisServer, transport: str | None, visibility: int = 3600) -> Connection:
    return Connection(
        server.url,
        transport=transport,
        # As make_celery sets them: a restore mutex left behind by a killed Redis expires soon.
        transport_options={
            "visibility_timeout": visibility,
            "unacked_restore_interval": 1,
            "unacked_mutex_expire": 2,
        },
    )


def _drain(conn: Connection, until: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out draining the broker"
        with contextlib.suppress(TimeoutError, socket.timeout):
            conn.drain_events(timeout=0.2)


def _lose_the_broker_mid_consume(server: RedisServer, transport: str | None, name: str) -> None:
    """What a worker's connection holds when Redis goes away under load, then the teardown
    Celery's consumer does after a connection error.

    The task channel (the default channel) has 10 messages delivered and unacknowledged and a
    BRPOP pending for more; a second channel consumes a fanout queue, as the remote-control
    (pidbox) consumer does, so closing it needs Redis too.
    """
    queue = Queue(name, Exchange(name), name)
    conn = _connection(server, transport)
    with conn.Producer() as producer:
        for i in range(10):
            producer.publish({"n": i}, exchange=queue.exchange, routing_key=name, declare=[queue])
    received: list[Message] = []
    consumer = conn.Consumer(queue, callbacks=[lambda body, msg: received.append(msg)])
    consumer.qos(prefetch_count=20)  # room for more: the channel keeps a BRPOP pending
    consumer.consume()
    control = Queue(f"{name}.pidbox", Exchange(f"{name}.bcast", type="fanout"), auto_delete=True)
    Consumer(conn.channel(), [control], no_ack=True, callbacks=[lambda b, m: None]).consume()
    task_channel = conn.default_channel
    _drain(conn, lambda: len(received) == 10 and task_channel._in_poll)
    server.proc.kill()  # type: ignore[union-attr]
    server.proc.wait(10)  # type: ignore[union-attr]
    # celery.worker.consumer.Consumer.on_connection_error_after_connected, line for line:
    bound_open_broker_sockets(conn, COLLECT_SOCKET_TIMEOUT)
    with contextlib.suppress(Exception):
        conn.collect(socket_timeout=COLLECT_SOCKET_TIMEOUT)
    ignore_errors(conn, conn.close)


def test_stock_kombu_still_crashes_on_this_path(up: RedisServer) -> None:
    """The reproduction: if this fails, kombu fixed the bug and mailgate.broker_transport can
    go (see the module docstring)."""
    with pytest.raises(AttributeError, match="hostname"):
        _lose_the_broker_mid_consume(up, STOCK, "bl-stock")


def test_our_transport_survives_and_the_unacked_come_back(up: RedisServer) -> None:
    _lose_the_broker_mid_consume(up, OURS, "bl-ours")  # no exception
    up.start()
    queue = Queue("bl-ours", Exchange("bl-ours"), "bl-ours")
    seen: set[int] = set()
    conn = _connection(up, OURS, visibility=1)

    def on_message(body: dict[str, int], message: Message) -> None:
        seen.add(body["n"])
        message.ack()

    with conn.Consumer(queue, callbacks=[on_message]):
        # The dead channel could not restore them (Redis was down): the visibility timeout does.
        _drain(conn, lambda: seen == set(range(10)), timeout=20)
    conn.release()


@pytest.mark.parametrize("transport", [STOCK, OURS], ids=["stock", "ours"])
def test_a_channel_outliving_its_connection_fails_with_a_connection_error(
    up: RedisServer, transport: str
) -> None:
    """Whatever else leaves a channel open when ``collect()`` drops the transport's client
    (any channel's close failing first), closing it later, or a task thread's late ack on it,
    must raise an error Celery treats as a lost connection ("Couldn't ack", reconnect), not
    one that stops the worker."""
    name = f"bl-outlive-{transport}"
    queue = Queue(name, Exchange(name), name)
    conn = _connection(up, transport)
    with conn.Producer() as producer:
        producer.publish({"n": 1}, exchange=queue.exchange, routing_key=name, declare=[queue])
    received: list[Message] = []
    conn.Consumer(queue, callbacks=[lambda body, msg: received.append(msg)]).consume()
    _drain(conn, lambda: received)
    errors = conn.connection_errors
    conn._do_close_transport()  # what collect() does once its channel closing has given up
    expected = AttributeError if transport == STOCK else errors
    with pytest.raises(expected):
        received[0].channel.close()
    with pytest.raises(expected):
        received[0].ack()


# ---------------------------------------------------------------------------------------------
# Real processes: a Celery worker (threads pool, as in the Procfile) under a 2,000-e-mail
# backlog while its broker goes away and comes back, several times in one run.

BACKLOG = 2000
CONCURRENCY = 8  # the Procfile's default: 8 threads, 32 messages prefetched
STOPS = (200, 800, 1400)  # Sent counts at which the broker is stopped and started again


def procfile_worker_args() -> list[str]:
    """The worker as the Procfile starts it (with mingle and gossip: more broker channels)."""
    return [arg for arg in worker_args(CONCURRENCY) if not arg.startswith("--without")]


def accept_bulk(store: StatusStore, app: Celery, count: int, redis_broker: bool) -> list[str]:
    """Accept ``count`` e-mails the way the API does (api.emails._record_and_publish): on the
    Redis broker, status record and task in one transaction; otherwise record, then publish."""
    ids = []
    for i in range(count):
        email_id = str(uuid.uuid4())
        job = EmailJob(
            email_id=email_id,
            owner="broker-loss",
            sender="ivr@gw.example",
            recipients=(f"backlog-{i}@loss.example",),
            message=f"message {i}",
        )
        watchdog_at = time.time() + 8
        if redis_broker:
            store.create(job, watchdog_at, task=(QUEUE, redis_task_message(app, email_id)))
        else:
            store.create(job, watchdog_at)
            publish(app, email_id)
        ids.append(email_id)
    return ids


def sent_count(store: StatusStore, ids: list[str]) -> int:
    """How many of ``ids`` are Sent; -1 while the status store cannot answer."""
    try:
        pipe = store.redis.pipeline(transaction=False)
        for email_id in ids:
            pipe.hget(f"mailgate:email:{email_id}", "status")
        return sum(status == "Sent" for status in pipe.execute())
    except redis.RedisError:
        return -1


def assert_all_sent_once_by_a_live_worker(
    store: StatusStore, ids: list[str], smtp: SmtpServer, worker: Service, stops: int
) -> None:
    assert worker.proc is not None
    wait_for(
        lambda: sent_count(store, ids) == len(ids) or worker.proc.poll() is not None,  # type: ignore[union-attr]
        150,
        f"{len(ids)} e-mails Sent",
    )
    assert worker.proc.poll() is None, f"the worker exited:\n{worker.output()[-4000:]}"
    assert "Unrecoverable error" not in worker.output()
    assert sent_count(store, ids) == len(ids)
    counts = smtp.handler.counts()
    assert all(counts.get(i, 0) >= 1 for i in ids), "an accepted e-mail never arrived"
    # Sent but not yet recorded when the broker (and status store) went away: at most what a
    # worker has in flight (its concurrency) per stop.
    duplicates = sum(counts[i] - 1 for i in ids)
    assert duplicates <= CONCURRENCY * stops, duplicates


@pytest.fixture(scope="module")
def loss(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workdir = Path(tmp_path_factory.mktemp("broker-loss-e2e"))
    server = RedisServer(workdir / "redis")
    server.start()
    smtp = SmtpServer()
    smtp.start()
    smtp.handler.delay = 0.01  # SMTP takes a moment: messages are in flight at every stop
    env = mailgate_env(
        workdir,
        server.url,
        smtp.url,
        RETRY_BASE_SECONDS="0.2",
        RETRY_MAX_DELAY_SECONDS="1",
        MAX_ATTEMPTS="40",
        REDELIVERY_SECONDS="8",
        SMTP_TIMEOUT_SECONDS="2",
    )
    yield {"redis": server, "smtp": smtp, "env": env, "workdir": workdir}
    smtp.stop()
    server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_redis_restarts_under_a_backlog_stop_no_worker(loss: dict[str, Any], sig: int) -> None:
    server: RedisServer = loss["redis"]
    settings = Settings.from_env(loss["env"])
    store = StatusStore.from_url(settings.redis_url, settings.status_ttl_seconds)
    ids = accept_bulk(store, make_celery(settings), BACKLOG, redis_broker=True)
    log = loss["workdir"] / f"worker-{sig}.log"
    worker = Service("worker", procfile_worker_args(), loss["env"], log).start()
    try:
        worker.wait_output(r"ready\.", 60)
        for point in STOPS:
            wait_for(lambda p=point: sent_count(store, ids) >= p, 90, f"{point} e-mails Sent")
            assert server.proc is not None
            server.proc.send_signal(sig)
            server.proc.wait(10)
            server.start()  # same port, same append-only file
        assert_all_sent_once_by_a_live_worker(store, ids, loss["smtp"], worker, len(STOPS))
        assert worker.output().count("Connection to broker lost") >= len(STOPS)
    finally:
        worker.stop()


RESTART_LOCK = Path(tempfile.gettempdir()) / "mailgate-rabbitmq-restart.lock"


@pytest.fixture
def rabbit_vhost() -> Iterator[str]:
    """A virtual host of this run's own (checkouts of this suite share the machine's RabbitMQ),
    and the machine-wide lock that keeps two restart tests from stopping it together."""
    vhost = f"mailgate-broker-loss-{uuid.uuid4().hex[:12]}"
    with RESTART_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        try:
            yield vhost
        finally:
            _rabbitmqctl("delete_vhost", vhost)


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)


def _rabbitmq_manageable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            pass
        return shutil.which("rabbitmqctl") is not None and _rabbitmqctl("status").returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.parametrize("ours", [False, True], ids=["stock", "ours"])
def test_task_threads_leave_publishing_events_to_the_event_loop(ours: bool) -> None:
    """A task thread that fills the event buffer must not publish it: on RabbitMQ it would
    wait for the confirm on a socket the event loop reads too (see mailgate.broker_events)."""
    app = make_celery(
        Settings.from_env({"MAILGATE_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//"})
    )
    cls = app.events.Dispatcher if ours else EventDispatcher
    assert ours == issubclass(cls, broker_events.LoopThreadDispatcher)
    published: list[tuple[str, int]] = []
    asked: list[int] = []

    class Recording(cls):  # type: ignore[misc,valid-type]
        def _publish(self, event: Any, producer: Any, routing_key: str, **kwargs: Any) -> None:
            published.append((routing_key, threading.get_ident()))

    with Connection("memory://") as conn:
        dispatcher = Recording(
            conn,
            app=app,
            enabled=True,
            buffer_group=["task"],
            buffer_limit=3,
            on_send_buffered=lambda: asked.append(1),
        )

        def task_thread() -> None:
            for n in range(7):
                dispatcher.send("task-succeeded", uuid=str(n))

        thread = threading.Thread(target=task_thread)
        thread.start()
        thread.join(10)
        loop_thread = threading.get_ident()
        if ours:
            assert published == [] and len(asked) == 7  # all left to the event loop
            dispatcher.flush()  # what the event loop does when asked
            assert published == [("task.multi", loop_thread)]
        else:  # Celery's own: the task thread published every full buffer
            assert published and all(ident != loop_thread for _, ident in published)


class _RunningTask:
    """Stands for a task a pool thread is running (``active_requests`` holds weak refs)."""


@pytest.mark.parametrize("quorum", ["0", "1"], ids=["classic", "quorum"])
def test_a_rabbitmq_reconnect_leaves_the_prefetch_count_to_the_event_loop(quorum: str) -> None:
    """Reconnecting with tasks in flight must not lower the prefetch count: raising it again
    is done by each task's ack callback, in the task's thread, as a synchronous ``basic.qos``
    on the socket the event loop reads (the stall of the restart test below)."""
    settings = Settings.from_env(
        {
            "MAILGATE_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//",
            "MAILGATE_BROKER_QUORUM_QUEUES": quorum,
        }
    )
    app = make_celery(settings)
    pool = ThreadTaskPool(limit=CONCURRENCY)
    consumer = WorkerConsumer(
        lambda *args: None,
        pool=pool,
        app=app,
        hub=None,
        controller=SimpleNamespace(use_eventloop=True, semaphore=None),
        initial_prefetch_count=CONCURRENCY * 4,
        prefetch_multiplier=4,
    )
    consumer.qos_global = quorum == "0"  # as the Tasks boot step records it once connected
    consumer.connection = app.connection_for_read()
    running = [_RunningTask() for _ in range(CONCURRENCY)]
    worker_state.active_requests.update(running)  # type: ignore[attr-defined]
    try:
        consumer.on_connection_error_after_connected(ConnectionResetError(104, "reset"))
    finally:
        worker_state.active_requests.difference_update(running)  # type: ignore[attr-defined]
        pool.stop()
    assert consumer._maximum_prefetch_restored
    assert consumer.initial_prefetch_count == CONCURRENCY * 4


@pytest.mark.slow
@pytest.mark.skipif(
    not _rabbitmq_manageable(), reason="no RabbitMQ on 127.0.0.1:5672 that rabbitmqctl controls"
)
def test_a_rabbitmq_restart_under_a_backlog_stops_no_worker(
    loss: dict[str, Any], rabbit_vhost: str
) -> None:
    """RabbitMQ stopped and started (``rabbitmqctl stop_app``/``start_app``) mid-backlog, in a
    virtual host of its own; the status store stays in Redis (a database of its own).

    The stall this guards against (Celery 5.7.0, amqp 5.4.2, threads pool): reconnecting with
    tasks in flight, Celery lowered the prefetch count and raised it again from each task's
    ack callback, run in the task's thread, as a synchronous ``basic.qos`` on the consumer's
    connection while the event loop read the same socket. The two readers split frames
    between them (one thread was left waiting for a "frame" of about 1 GB) and the worker,
    still connected and registered as a consumer with 32 messages unacknowledged, consumed
    nothing more: in 2 runs of 3. make_celery turns that prefetch reduction off on RabbitMQ.
    """
    redis_url = loss["env"]["MAILGATE_REDIS_URL"].rsplit("/", 1)[0] + "/3"
    env = {
        **loss["env"],
        "MAILGATE_REDIS_URL": redis_url,
        "MAILGATE_BROKER_URL": f"amqp://guest:guest@127.0.0.1:5672/{rabbit_vhost}",
    }
    settings = Settings.from_env(env)
    store = StatusStore.from_url(settings.redis_url, settings.status_ttl_seconds)
    app = make_celery(settings)
    ids = accept_bulk(store, app, 600, redis_broker=False)
    worker = Service("worker", procfile_worker_args(), env, loss["workdir"] / "worker-amqp.log")
    worker.start()
    try:
        worker.wait_output(r"ready\.", 60)
        wait_for(lambda: sent_count(store, ids) >= 100, 60, "100 e-mails Sent")
        assert _rabbitmqctl("stop_app").returncode == 0
        try:
            wait_for(lambda: "Connection to broker lost" in worker.output(), 30, "the loss")
        finally:
            assert _rabbitmqctl("start_app").returncode == 0
        worker.wait_output(r"Connected to amqp.*\n(.|\n)*Connected to amqp", 60)
        # Deterministic, where the stall is a race: no prefetch change from the task threads.
        assert "Temporarily reducing the prefetch count" not in worker.output()
        resumed = sent_count(store, ids) + 50
        wait_for(lambda: sent_count(store, ids) >= resumed, 30, "deliveries after the restart")
        assert_all_sent_once_by_a_live_worker(store, ids, loss["smtp"], worker, 1)
    finally:
        worker.stop()
        app.close()
