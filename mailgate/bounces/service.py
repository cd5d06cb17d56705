"""``mailgate bounces``: the SMTP listener and the IMAP poller in one process, until a signal.

The listener runs when ``MAILGATE_BOUNCE_ADDRESS`` is set, the poller when
``MAILGATE_BOUNCE_IMAP_URL`` is. With neither the process says so and waits, so a Procfile
or compose service that starts it everywhere does no harm.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from mailgate.bounces.imap import Poller
from mailgate.bounces.listener import controller
from mailgate.bounces.recorder import Recorder
from mailgate.config import Settings
from mailgate.logs import configure_logging
from mailgate.status import StatusStore

log = logging.getLogger("mailgate.bounces")


def run(settings: Settings) -> int:
    """Serve until SIGTERM or SIGINT; the exit code."""
    configure_logging(process="bounces")
    # flufl.bounce logs each detector it runs at INFO: a dozen lines per message.
    logging.getLogger("flufl.bounce").setLevel(logging.WARNING)
    store = StatusStore.from_url(
        settings.redis_url, settings.status_ttl_seconds, settings.redis_min_replicas
    )
    recorder = Recorder(store, settings)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    listener, poller = None, None
    if settings.bounce_address:
        listener = controller(
            recorder,
            settings.bounce_smtp_host,
            settings.bounce_smtp_port,
            settings.bounce_max_bytes,
            settings.bounce_rate,
        )
        listener.start()
        log.info(
            "bounce listener on %s:%d for %s",
            settings.bounce_smtp_host,
            settings.bounce_smtp_port,
            settings.bounce_address,
        )
    if settings.bounce_imap is not None:
        target = settings.bounce_imap
        polling = Poller(recorder, target, settings.bounce_imap_processed)
        poller = threading.Thread(
            target=polling.run,
            args=(stop, settings.bounce_imap_poll_seconds),
            name="mailgate-imap",
            daemon=True,
        )
        poller.start()
        log.info(
            "polling imap%s://%s:%d/%s every %gs",
            "s" if target.ssl else "",
            target.host,
            target.port,
            target.folder,
            settings.bounce_imap_poll_seconds,
        )
    if listener is None and poller is None:
        log.warning(
            "nothing to do: set MAILGATE_BOUNCE_ADDRESS (SMTP listener) and/or "
            "MAILGATE_BOUNCE_IMAP_URL (IMAP poller); waiting"
        )
    log.info("mailgate bounces ready")
    stop.wait()
    if listener is not None:
        listener.stop()
    if poller is not None:
        poller.join(timeout=10)
    return 0
