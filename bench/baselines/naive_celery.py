"""Baseline (b): the textbook Celery e-mail task, with Celery's default settings.

The view calls ``apply_async`` with the whole mail as arguments (early acks, the ``celery``
queue, no status record; an attachment by its path); the task builds the message with the
``email`` package (bench.payload.build: ``set_content``, ``add_alternative``,
``add_attachment`` of the file it reads) and opens a new SMTP connection per mail. The worker
runs with the defaults too: ``celery -A bench.baselines.naive_celery worker`` (prefork, one
child per core). ``NAIVE_BROKER_URL`` and ``NAIVE_SMTP_PORT`` say where Redis and the sink
are.
"""

from __future__ import annotations

import os
import smtplib
import uuid
from pathlib import Path

from celery import Celery
from flask import Flask, Response, request

from bench import payload
from bench.baselines.bare import xml_answer

TASK_NAME = "naive.send_mail"

app = Celery("naive", broker=os.environ.get("NAIVE_BROKER_URL", "redis://127.0.0.1:6379/1"))


@app.task(name=TASK_NAME)  # type: ignore[untyped-decorator]
def send_mail(
    message_id: str,
    recipient: str,
    subject: str,
    body: str,
    html: str | None = None,
    attachment: str | None = None,
) -> None:
    """Build the message and send it over a connection of its own."""
    shape = payload.Shape("naive", subject, body, html, voicemail=attachment is not None)
    message = payload.build(
        message_id, "naive.local", shape, Path(attachment) if attachment else None, recipient
    )
    port = int(os.environ.get("NAIVE_SMTP_PORT", "2525"))
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.send_message(message)


def task_args(message_id: str, shape: payload.Shape, voicemail: Path) -> list[str | None]:
    """The task's arguments for one e-mail of ``shape``: what the view would publish."""
    attachment = str(voicemail) if shape.voicemail else None
    return [message_id, payload.RECIPIENT, shape.subject, shape.body, shape.html, attachment]


web = Flask(__name__)


@web.route("/api", methods=["GET", "POST"])
def api() -> Response:
    """Parse, publish the task with the mail in it, answer the same XML."""
    values = request.values
    recipient, body = values.get("Recipient", ""), values.get("Message", "")
    if not recipient or not body:
        return Response(b"missing", 400)
    email_id = str(uuid.uuid4())
    send_mail.apply_async(
        args=[
            email_id,
            recipient,
            values.get("Subject", ""),
            body,
            values.get("HtmlMessage"),
            values.get("Attachments"),
        ]
    )
    return xml_answer(email_id)


@web.route("/healthz")
def healthz() -> Response:
    return Response("ok\n", 200, content_type="text/plain")
