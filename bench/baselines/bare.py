"""Baseline (a): a bare Flask endpoint, served the stock way (gunicorn's sync workers, see
bench.servers.start_gunicorn_sync; gunicorn comes with the bench extra only).

It reads the same GET request the way a plain Flask view does and answers the same XML
document as a successful SendEmail, but checks no credentials, writes no status record and
publishes nothing.
"""

from __future__ import annotations

import uuid
from xml.etree import ElementTree as ET

from flask import Flask, Response, request

DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>'

app = Flask(__name__)


def xml_answer(email_id: str) -> Response:
    """The Ozeki success document with the EmailId, as mailgate renders it."""
    root = ET.Element("Response")
    for name, text in (("Code", "200"), ("Message", "Command successfully executed"),
                       ("EmailId", email_id)):  # fmt: skip
        ET.SubElement(root, name).text = text
    body = DECLARATION + ET.tostring(root, encoding="unicode").encode("utf-8")
    return Response(body, 200, content_type="application/xml; charset=utf-8")


@app.route("/api", methods=["GET", "POST"])
def api() -> Response:
    values = request.values
    if not values.get("Recipient") or not values.get("Message"):
        return Response(b"missing", 400)
    return xml_answer(str(uuid.uuid4()))


@app.route("/healthz")
def healthz() -> Response:
    return Response("ok\n", 200, content_type="text/plain")
