"""What the benchmark sends: the e-mails an IVR sends, in five shapes, and their mix.

- ``plain``: the plain short one (ASCII subject, 15 lines of 70 characters, about 1 KiB);
- ``accented``: a receipt with accented names in the subject and the body (UTF-8);
- ``paragraph``: a receipt typed as one paragraph, one line of about 2,000 characters;
- ``html``: an HTML receipt (``HtmlMessage``) with its text part;
- ``voicemail``: a voicemail notice with a WAV of about 200 KB attached by path.

The ``mix`` cycles through the five in that order, so every five e-mails hold one of each.
The gateway gets each one as an Ozeki ``SendEmail`` request; the baselines build the same
message with the ``email`` package (:func:`build`), as a naive task does.
"""

from __future__ import annotations

import math
import struct
import wave
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from pathlib import Path
from urllib.parse import urlencode

USER, PASSWORD = "bench", "bench-password-not-secret"
SENDER = "mailgate@localhost"
"""mailgate's default sender, which every account may use."""
RECIPIENT = "someone@example.com"
SUBJECT = "Voicemail from +44 20 7946 0000 (0:42)"
_LINE = "You have a new voicemail. Call back on the number above to listen to it again. "
BODY = "\n".join(_LINE[:70] for _ in range(15))
"""15 lines of 70 characters: about 1 KiB, with line breaks as a real text body has."""

VOICEMAIL_FILE = "vm-bench.wav"
VOICEMAIL_BYTES = 200_000
"""The WAV's size, about: 12.5 s of 8 kHz 16-bit mono, as a PBX records voicemail."""


@dataclass(frozen=True)
class Shape:
    """One kind of e-mail: its subject, text, HTML part and whether the voicemail is attached."""

    name: str
    subject: str
    body: str
    html: str | None = None
    voicemail: bool = False


_ACCENTED_BODY = "\n".join(
    [
        "Bonjour Zoë Müller-Łukasiewicz,",
        "",
        "Nous avons bien reçu votre paiement de 42,50 € pour la facture n° 2026-0815.",
        "Référence de l'opération : AÉ-77-ßø, reçue le 2 décembre à 14 h 05.",
        "",
        "Très cordialement,",
        "Le service clientèle — Société Générale des Télécoms",
    ]
)
_SENTENCE = (
    "Thank you for your call today regarding account 4471-0093, your payment of "
    "GBP 42.50 was received and applied to the invoice dated 1 December, "
)
_PARAGRAPH = (_SENTENCE * 14)[:2000].rstrip(", ") + "."
_HTML = "\n".join(
    [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><title>Receipt</title></head>',
        '<body style="font-family: Arial, sans-serif; color: #222">',
        "<h1>Payment receipt</h1>",
        "<p>Thank you for your payment. Here are the details of the transaction.</p>",
        '<table cellpadding="4" border="1" style="border-collapse: collapse">',
        *(
            f"<tr><td>Item {n}</td><td>Call bundle, {n * 10} minutes</td>"
            f"<td>GBP {n * 2}.50</td></tr>"
            for n in range(1, 13)
        ),
        '<tr><td colspan="2"><b>Total</b></td><td><b>GBP 42.50</b></td></tr>',
        "</table>",
        '<p>Questions? Call us on <a href="tel:+442079460000">+44 20 7946 0000</a>.</p>',
        "</body></html>",
    ]
)

SHAPES: dict[str, Shape] = {
    shape.name: shape
    for shape in (
        Shape("plain", SUBJECT, BODY),
        Shape("accented", "Reçu de paiement n° 2026-0815 \u2013 Zoë Müller", _ACCENTED_BODY),
        Shape("paragraph", "Receipt for your payment, account 4471-0093", _PARAGRAPH),
        Shape(
            "html",
            "Payment receipt 2026-0815",
            "Payment receipt: GBP 42.50. Thank you.",
            html=_HTML,
        ),
        Shape("voicemail", SUBJECT, BODY[:420], voicemail=True),
    )
}
MIX = "mix"
KINDS = (MIX, *SHAPES)
"""What a figure can be measured on: the mix, or one shape alone."""


def shapes(kind: str) -> list[Shape]:
    """The shapes a figure cycles through: all five for the mix, else the one."""
    return list(SHAPES.values()) if kind == MIX else [SHAPES[kind]]


def fields(shape: Shape, voicemail: Path | None) -> dict[str, str]:
    """The SendEmail parameters of one e-mail of ``shape``, credentials included."""
    params = {
        "command": "SendEmail",
        "Recipient": RECIPIENT,
        "Subject": shape.subject,
        "Message": shape.body,
        "Username": USER,
        "Password": PASSWORD,
    }
    if shape.html is not None:
        params["HtmlMessage"] = shape.html
    if shape.voicemail:
        if voicemail is None:
            raise ValueError("the voicemail shape needs the WAV's path")
        params["Attachments"] = str(voicemail)
    return params


def form(shape: Shape, voicemail: Path | None) -> str:
    """The request body (``application/x-www-form-urlencoded``) of one e-mail of ``shape``."""
    return urlencode(fields(shape, voicemail))


def query(command: str = "SendEmail") -> str:
    """The plain request's query string, credentials included (loopback only): the accept
    figures' GET."""
    return urlencode({**fields(SHAPES["plain"], None), "command": command})


def write_voicemail(folder: Path) -> Path:
    """A WAV of about :data:`VOICEMAIL_BYTES` in ``folder`` (a tone: real audio, not zeros)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / VOICEMAIL_FILE
    rate, frames = 8000, VOICEMAIL_BYTES // 2
    samples = (int(8000 * math.sin(2 * math.pi * 440 * n / rate)) for n in range(frames))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return path


def build(
    message_id: str,
    host: str,
    shape: Shape,
    voicemail: Path | None = None,
    recipient: str = RECIPIENT,
) -> EmailMessage:
    """The message a naive task builds with the ``email`` package, shaped like mailgate's:
    text (and HTML) body, the WAV read from its path and attached."""
    message = EmailMessage(policy=SMTP)
    message["From"] = SENDER
    message["To"] = recipient
    message["Subject"] = shape.subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = f"<{message_id}@{host}>"
    message.set_content(shape.body)
    if shape.html is not None:
        message.add_alternative(shape.html, subtype="html")
    if shape.voicemail:
        if voicemail is None:
            raise ValueError("the voicemail shape needs the WAV's path")
        message.add_attachment(
            voicemail.read_bytes(), maintype="audio", subtype="x-wav", filename=voicemail.name
        )
    return message
