"""``python -m bench.memory``: worker memory for sending one e-mail with a large attachment
(issue 16, item 3): resident memory growth as a multiple of the message's encoded size.

A fresh process does what a delivery thread of ``mailgate worker`` does for one e-mail: the
worker's :class:`worker.delivery.Delivery` renders it (the file read through the attachment
sandbox) and sends it with :class:`worker.smtp.SmtpTransport` to an SMTP sink in another
process (aiosmtpd's ``Sink`` handler, which drops what it receives). First a small e-mail
goes out, so that imports and the SMTP session are in place; then the process's resident
memory is read, the large e-mail is sent, and the growth is the process's peak resident memory
(``ru_maxrss``) over the figure read before. The goal: at most 2x the encoded size.

``--baseline`` adds the same measure for what a naive task does (``EmailMessage`` +
``add_attachment`` + ``as_bytes``, then ``smtplib``'s ``sendmail``), for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from mailgate.attachments import check_path
from mailgate.cli.dev.embedded import free_port
from mailgate.config import Settings
from mailgate.jobs import EmailJob
from mailgate.relays import SmtpTarget
from worker.delivery import Delivery
from worker.message import base64_size
from worker.smtp import SmtpTransport

RAW_BYTES = 18_000_000
"""The attachment: 18 MB on disk, about 24.6 MB in base64 (the issue's e-mail)."""
SENDER, RECIPIENT = "mailgate@localhost", "someone@example.com"


def _job(email_id: str, path: Path | None, folder: Path) -> EmailJob:
    attachments = (check_path(str(path), (folder,)),) if path else ()
    return EmailJob(email_id, "bench", SENDER, (RECIPIENT,), "Voicemail attached.",
                    "Voicemail from +44 20 7946 0000", attachments)  # fmt: skip


def child(port: int, path: Path, mode: str) -> dict[str, float]:
    """Send the small e-mail, then the large one, in this process: the memory figures."""
    folder = path.parent
    settings = Settings.from_env({
        "MAILGATE_REDIS_URL": "redis://127.0.0.1:1/0", "MAILGATE_ATTACHMENT_ROOTS": str(folder),
        "MAILGATE_MAX_EMAIL_BYTES": str(64 << 20),
    })  # fmt: skip
    transport = SmtpTransport(SmtpTarget("127.0.0.1", port), 120)
    delivery = Delivery(store=None, transport=transport, settings=settings)  # type: ignore[arg-type]
    small = folder / "small.wav"
    small.write_bytes(b"RIFF" * 100)
    if mode == "writer":
        send = delivery._send  # render, then the transport: what one delivery does
    else:
        client = smtplib.SMTP("127.0.0.1", port, timeout=120)

        def send(job: EmailJob) -> str:
            message = EmailMessage(policy=SMTP)
            message["From"], message["To"] = job.sender, ", ".join(job.recipients)
            message["Subject"], message["Message-ID"] = job.subject, f"<{job.email_id}@bench>"
            message.set_content(job.message)
            for attachment in job.attachments:
                data = Path(attachment.path).read_bytes()
                message.add_attachment(data, maintype="audio", subtype="wav",
                                       filename=Path(attachment.path).name)  # fmt: skip
            client.sendmail(job.sender, list(job.recipients), message.as_bytes())
            return "250"

    send(_job("warm-up", small, folder))
    before = psutil.Process().memory_info().rss
    send(_job("large", path, folder))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    encoded = base64_size(path.stat().st_size)
    return {"encoded_mb": encoded / 1e6, "rss_before_mb": before / 1e6,
            "peak_mb": peak / 1e6, "growth_mb": (peak - before) / 1e6,
            "growth_x": (peak - before) / encoded}  # fmt: skip


def measure(raw_bytes: int, modes: list[str]) -> dict[str, dict[str, float]]:
    """Start the sink, run one child per mode, stop the sink."""
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink",
         "-s", str(64 << 20), "-l", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for_port(port, sink)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp).resolve() / "voicemail.wav"
            with path.open("wb") as handle:
                for _ in range(raw_bytes // (1 << 20)):
                    handle.write(os.urandom(1 << 20))
                handle.write(os.urandom(raw_bytes % (1 << 20)))
            results = {}
            for mode in modes:
                found = subprocess.run(
                    [sys.executable, "-m", "bench.memory", "--child", str(port), str(path), mode],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                results[mode] = json.loads(found.stdout)
            return results
    finally:
        sink.terminate()
        sink.wait(10)


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the SMTP sink did not start")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--raw-bytes", type=int, default=RAW_BYTES, help="attachment size")
    parser.add_argument("--baseline", action="store_true", help="also the plain email build")
    parser.add_argument(
        "--child", nargs=3, metavar=("PORT", "FILE", "MODE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        port, path, mode = args.child
        print(json.dumps(child(int(port), Path(path), mode)))
        return
    modes = ["writer", "email"] if args.baseline else ["writer"]
    results = measure(args.raw_bytes, modes)
    print("| builder | encoded size | RSS before | peak RSS | growth | growth / encoded size |")
    print("|---|---:|---:|---:|---:|---:|")
    names = {"writer": "mailgate's writer and transport", "email": "plain `email` + `sendmail`"}
    for mode, row in results.items():
        print(
            f"| {names[mode]} | {row['encoded_mb']:.1f} MB | {row['rss_before_mb']:.1f} MB | "
            f"{row['peak_mb']:.1f} MB | {row['growth_mb']:.1f} MB | {row['growth_x']:.2f}x |"
        )


if __name__ == "__main__":
    main()
