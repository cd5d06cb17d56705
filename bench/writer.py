"""``python -m bench.writer``: CPU per message of the message writer, shape by shape, against
the plain ``email`` build a naive Celery task does (issue 16, item 2).

For each shape an IVR sends, two builders make the message's bytes in this process:

- **writer**: :func:`worker.message.render`, attachments opened through
  :func:`mailgate.attachments.open_checked` (the sandbox checks included), as the worker does;
- **plain email**: ``EmailMessage`` + ``set_content`` / ``add_alternative`` /
  ``add_attachment`` (the file read from disk) + ``as_bytes``.

Each runs in a loop after a warm-up; the figure is CPU time (``time.process_time``) per
message, the best of several rounds, since other load on the machine can only add to it. The
goals: the writer at most a third of the plain build for every shape, and at most 1.5 ms for
the message with a 200 KB attachment. Prints a markdown table (``--json`` for the figures).
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from pathlib import Path

from mailgate.addresses import bare
from mailgate.attachments import check_path, open_checked
from mailgate.jobs import EmailJob
from worker.message import render

HOST = "mailgate.local"
SENDER = "mailgate@localhost"
RECIPIENT = "someone@example.com"
SUBJECT = "Voicemail from +44 20 7946 0000 (0:42)"
_LINE = "You have a new voicemail. Call back on the number above to listen to it again. "
SHORT = "\n".join(_LINE[:70] for _ in range(15))
"""bench/payload.py's body: 15 lines of 70 characters."""
PARAGRAPH = (_LINE * 4)[:300]
ACCENTED = "\n".join(
    ["Guten Tag Herr Müller,", "Sie haben eine neue Sprachnachricht von Jörg Weiß erhalten.",
     "Rückruf unter +49 30 1234567.", "Grüße, Ihre Zentrale"] * 3
)  # fmt: skip
RECEIPT = (
    "<html><body><h1>Zahlungsbestätigung</h1><table>"
    + "".join(f"<tr><td>Position {i}</td><td>{i},00 €</td></tr>" for i in range(1, 13))
    + "<tr><td><b>Summe</b></td><td><b>78,00 €</b></td></tr></table></body></html>"
)
WAV_BYTES = 200 * 1024


@dataclass(frozen=True)
class Shape:
    """One kind of e-mail, as the job the worker gets."""

    name: str
    job: EmailJob


def shapes(folder: Path) -> list[Shape]:
    """The shapes of issue 16, with their files written to ``folder``."""
    wav = folder / "voicemail-0042.wav"
    wav.write_bytes(b"RIFF" + bytes(range(256)) * (WAV_BYTES // 256) + b"tail")
    upload = folder / "spooled-7d1f"
    upload.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 200)
    base = EmailJob("0b7e1c2d-9f1a-4c3b-8e2d-1a2b3c4d5e6f", "bench", SENDER, (RECIPIENT,),
                    SHORT, SUBJECT)  # fmt: skip
    path_attachment = check_path(str(wav), (folder,))
    uploaded = replace(
        check_path(str(upload), (folder,)),
        filename="Rechnung für Jörg Müller, Dezember.pdf",
        content_type="application/pdf",
    )
    return [
        Shape("ASCII, short lines", base),
        Shape("one 300-character line", replace(base, message=PARAGRAPH)),
        Shape("UTF-8 text and subject", replace(base, subject="Rückruf von Jörg Weiß",
                                                 message=ACCENTED)),
        Shape("HTML receipt", replace(base, subject="Ihre Zahlung", message="Summe: 78,00 €",
                                      html=RECEIPT)),
        Shape("Cc and display names", replace(
            base, sender="IVR Zentrale <mailgate@localhost>",
            recipients=("Jörg Müller <joerg@example.com>",),
            cc=('"Doe, Jane" <jane@example.com>', "Büro Wien <office@example.com>"))),
        Shape("200 KB WAV by path", replace(base, attachments=(path_attachment,))),
        Shape("upload (51 KB PDF, non-ASCII name)", replace(base, attachments=(uploaded,))),
    ]  # fmt: skip


def write(job: EmailJob, roots: tuple[Path, ...]) -> bytes | bytearray:
    """The writer, as the worker calls it."""
    return render(job, HOST, lambda a: open_checked(a, roots), 1 << 26)


def plain(job: EmailJob) -> bytes:
    """The plain ``email`` build of the same e-mail, as a naive task writes it."""
    message = EmailMessage(policy=SMTP)
    message["From"] = job.sender
    message["To"] = ", ".join(job.recipients)
    if job.cc:
        message["Cc"] = ", ".join(job.cc)
    message["Subject"] = job.subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = f"<{job.email_id}@{HOST}>"
    message.set_content(job.message)
    if job.html:
        message.add_alternative(job.html, subtype="html")
    for attachment in job.attachments:
        name = attachment.filename or Path(attachment.path).name
        kind = attachment.content_type or mimetypes.guess_type(name)[0]
        maintype, subtype = (kind or "application/octet-stream").split("/")
        data = Path(attachment.path).read_bytes()
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return message.as_bytes()


def cpu_per_call(build: Callable[[], object], rounds: int, seconds: float) -> float:
    """CPU seconds per call: the best of ``rounds`` rounds of about ``seconds`` each."""
    for _ in range(3):
        build()  # warm-up: imports, caches
    started, calls = time.process_time(), 0
    while time.process_time() - started < seconds / 4:
        build()
        calls += 1
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(calls * 4):
            build()
        best = min(best, (time.process_time() - started) / (calls * 4))
    return best


def measure(rounds: int = 5, seconds: float = 0.5) -> list[dict[str, object]]:
    """The figures of every shape: writer and plain ms per message, the ratio, the goal."""
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp).resolve()
        for shape in shapes(folder):
            roots = (folder,)
            job = shape.job
            assert bare(job.sender) == SENDER
            ours = cpu_per_call(lambda job=job, roots=roots: write(job, roots), rounds, seconds)
            ours *= 1000
            theirs = cpu_per_call(lambda job=job: plain(job), rounds, seconds) * 1000
            goal = ours <= theirs / 3 and (not _has_wav(job) or ours <= 1.5)
            rows.append({"shape": shape.name, "writer_ms": round(ours, 3),
                         "plain_ms": round(theirs, 3), "ratio": round(ours / theirs, 3),
                         "goal_met": goal, "bytes": len(write(job, roots))})  # fmt: skip
    return rows


def _has_wav(job: EmailJob) -> bool:
    return any(a.path.endswith(".wav") for a in job.attachments)


def table(rows: list[dict[str, object]]) -> str:
    """The figures as the markdown table of bench/README.md."""
    lines = ["| shape | bytes | writer | plain `email` | writer / plain | goal met |",
             "|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for row in rows:
        met = "yes" if row["goal_met"] else "no"
        lines.append(
            f"| {row['shape']} | {row['bytes']} | {row['writer_ms']:.3f} ms | "
            f"{row['plain_ms']:.3f} ms | {row['ratio']:.2f} | {met} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.writer", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per figure (best taken)")
    parser.add_argument("--seconds", type=float, default=0.5, help="CPU seconds per round")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    rows = measure(args.rounds, args.seconds)
    print(json.dumps(rows, indent=2) if args.json else table(rows))


if __name__ == "__main__":
    main()
