"""End to end over real HTTP: the API (`mailgate web`) -> Redis -> Celery worker -> SMTP server."""

from __future__ import annotations

import base64
import json
import os
import urllib.parse
import urllib.request
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from tests.conftest import OTHER_PASSWORD, OTHER_USER, PASSWORDS, SEED_PASSWORD, SEED_USER
from tests.support import RedisServer, Service, SmtpServer, wait_for

pytestmark = pytest.mark.usefixtures("worker")
FINAL = {"Sent", "Failed"}


def get(url: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        root = ET.fromstring(response.read())
    return {child.tag: child.text or "" for child in root}


def send(api_url: str, **params: str) -> str:
    query = {"command": "SendEmail", "Username": SEED_USER, "Password": SEED_PASSWORD, **params}
    body = get(f"{api_url}/api?{urllib.parse.urlencode(query)}")
    assert body["Code"] == "200", body
    return body["EmailId"]


def status(api_url: str, email_id: str) -> dict[str, str]:
    query = urllib.parse.urlencode(
        {
            "command": "GetEmailStatus",
            "EmailId": email_id,
            "Username": SEED_USER,
            "Password": SEED_PASSWORD,
        }
    )
    return get(f"{api_url}/api?{query}")


def final_status(api_url: str, email_id: str, timeout: float = 30) -> dict[str, str]:
    return wait_for(
        lambda: (s := status(api_url, email_id))["Status"] in FINAL and s,
        timeout,
        f"{email_id} to reach Sent or Failed",
    )


def test_the_seed_example_reaches_the_smtp_server_and_ends_sent(
    api_url: str, smtp_server: SmtpServer
) -> None:
    # The request exactly as the Ozeki documentation shows it.
    seed = (
        "/api?command=SendEmail&Sender=test%40domain.com&Recipient=abc%40anotherdomain.com"
        "&Message=Hello+world&Subject=TestSubject&Username=HTTP_User_1&Password=qwe123"
    )
    body = get(api_url + seed)
    assert (body["Code"], body["Message"]) == ("200", "Command successfully executed")
    email_id = body["EmailId"]

    received = wait_for(lambda: smtp_server.handler.find(email_id), 30, "the message")
    assert received.mail_from == "test@domain.com"
    assert received.rcpt_tos == ["abc@anotherdomain.com"]
    message = received.message
    assert message["From"] == "test@domain.com"
    assert message["To"] == "abc@anotherdomain.com"
    assert message["Subject"] == "TestSubject"
    assert message["Message-ID"] == f"<{email_id}@mailgate.local>"
    assert message["Date"]
    assert message.get_content().strip() == "Hello world"

    done = final_status(api_url, email_id)
    assert done["Status"] == "Sent"
    assert done["Attempts"] == "1"
    assert done["SmtpResponse"].startswith("250")
    assert done["SentAt"].endswith("Z")
    assert smtp_server.handler.count(email_id) == 1


def test_attachments_arrive_byte_for_byte(
    api_url: str, smtp_server: SmtpServer, attachment_root: Path
) -> None:
    pdf = attachment_root / "Rechnung-März.pdf"
    pdf.write_bytes(os.urandom(50_000))
    text = attachment_root / "order.txt"
    text.write_text("order 42\n")
    email_id = send(
        api_url,
        Recipient="buyer@shop.example",
        Message="Your receipt",
        Attachments=f"{pdf};{text}",
    )
    received = wait_for(lambda: smtp_server.handler.find(email_id), 30, "the message")
    parts = {part.get_filename(): part for part in received.message.iter_attachments()}
    assert set(parts) == {"Rechnung-März.pdf", "order.txt"}
    assert parts["Rechnung-März.pdf"].get_content_type() == "application/pdf"
    assert parts["Rechnung-März.pdf"].get_content() == pdf.read_bytes()
    assert parts["order.txt"].get_content_type() == "text/plain"
    assert parts["order.txt"].get_content() == "order 42\n"
    assert final_status(api_url, email_id)["Status"] == "Sent"


def test_two_temporary_failures_then_sent(api_url: str, smtp_server: SmtpServer) -> None:
    address = "tempfail2-receipt@example.com"
    email_id = send(api_url, Recipient=address, Message="third time lucky")
    done = final_status(api_url, email_id)
    assert done["Status"] == "Sent"
    assert done["Attempts"] == "3"
    assert "451" in done["LastError"]  # the last deferral stays on record
    assert smtp_server.handler.attempts[address] == 3
    assert smtp_server.handler.count(email_id) == 1


def test_retrying_is_visible_while_the_server_defers(api_url: str) -> None:
    email_id = send(api_url, Recipient="tempfail3-slow@example.com", Message="m")
    seen = wait_for(
        lambda: (s := status(api_url, email_id))["Status"] == "Retrying" and s, 20, "Retrying"
    )
    assert seen["NextAttemptAt"].endswith("Z")
    assert "451" in seen["SmtpResponse"]
    assert final_status(api_url, email_id)["Status"] == "Sent"


def test_a_5xx_reply_fails_at_once(api_url: str, smtp_server: SmtpServer) -> None:
    email_id = send(api_url, Recipient="reject-nobody@example.com", Message="m")
    done = final_status(api_url, email_id)
    assert done["Status"] == "Failed"
    assert done["Attempts"] == "1"
    assert done["SmtpResponse"].startswith("550")
    assert "rejected" in done["LastError"]
    assert smtp_server.handler.count(email_id) == 0


def test_gives_up_after_max_attempts(api_url: str, smtp_server: SmtpServer) -> None:
    email_id = send(api_url, Recipient="tempfail99-never@example.com", Message="m")
    done = final_status(api_url, email_id)
    assert done["Status"] == "Failed"
    assert done["Attempts"] == "4"  # MAILGATE_MAX_ATTEMPTS in the test environment
    assert "gave up after 4 attempts" in done["LastError"]


def test_post_form_with_basic_auth(api_url: str, smtp_server: SmtpServer) -> None:
    token = base64.b64encode(f"{SEED_USER}:{SEED_PASSWORD}".encode()).decode()
    form = urllib.parse.urlencode(
        {
            "command": "SendEmail",
            "Recipient": "a@shop.example, b@shop.example",
            "Message": "Ünïcode ✓",
        }
    ).encode()
    request = urllib.request.Request(
        f"{api_url}/api", data=form, headers={"Authorization": f"Basic {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = {c.tag: c.text for c in ET.fromstring(response.read())}
    email_id = str(body["EmailId"])
    received = wait_for(lambda: smtp_server.handler.find(email_id), 30, "the message")
    assert received.rcpt_tos == ["a@shop.example", "b@shop.example"]
    assert received.message.get_content().strip() == "Ünïcode ✓"


def test_another_account_cannot_read_the_status(api_url: str) -> None:
    email_id = send(api_url, Recipient="x@shop.example", Message="m")
    query = urllib.parse.urlencode(
        {
            "command": "GetEmailStatus",
            "EmailId": email_id,
            "Username": OTHER_USER,
            "Password": OTHER_PASSWORD,
        }
    )
    assert get(f"{api_url}/api?{query}")["Code"] == "404"


def test_no_password_in_any_log_line_or_record(
    api_url: str,
    worker: Service,
    logs: list[Path],
    smtp_server: SmtpServer,
    redis_server: RedisServer,
) -> None:
    email_id = send(api_url, Recipient="logs@shop.example", Message="secret body text 7731")
    assert final_status(api_url, email_id)["Status"] == "Sent"
    stored = json.dumps(redis_server.client().hgetall(f"mailgate:email:{email_id}"))
    assert SEED_PASSWORD not in stored
    # The queue, while messages sit in it: tests/test_guarantees.py.
    get(f"{api_url}/api?command=SendEmail&Username={SEED_USER}&Password=wrong-pw-9931")
    text = "".join(path.read_text(errors="replace") for path in logs)
    assert email_id in text  # the logs are the right ones, and they mention the e-mail
    for secret in (*PASSWORDS, "wrong-pw-9931"):
        assert secret not in text
    assert "secret body text 7731" not in text
    assert "logs@shop.example" not in text


def scrape(api_url: str) -> dict[str, float]:
    """Every sample of /metrics: series (name and labels) -> value."""
    with urllib.request.urlopen(f"{api_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    return samples


def test_metrics_count_requests_and_show_the_queue(api_url: str) -> None:
    # The counters are the session's: what this test's two e-mails add to them is checked.
    before = scrape(api_url)
    sent = send(api_url, Recipient="metrics@shop.example", Message="m")
    failed = send(api_url, Recipient="reject-metrics@shop.example", Message="m")
    assert final_status(api_url, sent)["Status"] == "Sent"
    assert final_status(api_url, failed)["Status"] == "Failed"
    after = scrape(api_url)

    def added(series: str) -> float:
        return after.get(series, 0.0) - before.get(series, 0.0)

    # The API's own counters (this web process serves only this test now): exactly two sends.
    assert added('mailgate_api_requests_total{code="200",command="SendEmail"}') == 2
    assert added("mailgate_accept_seconds_count") == 2
    assert added('mailgate_api_requests_total{code="200",command="GetEmailStatus"}') >= 2
    # The workers' counters in Redis: each outcome and reply class counted.
    assert added('mailgate_emails_total{outcome="sent"}') >= 1
    assert added('mailgate_emails_total{outcome="failed"}') >= 1
    assert added('mailgate_smtp_replies_total{class="2xx"}') >= 1
    assert added('mailgate_smtp_replies_total{class="5xx"}') >= 1
    assert added("mailgate_delivery_seconds_count") >= 1  # the Sent one's latency
    assert (
        after['mailgate_delivery_seconds_bucket{le="+Inf"}']
        == after["mailgate_delivery_seconds_count"]
    )
    assert after["mailgate_redis_up"] == 1.0
    assert after["mailgate_pending_emails"] >= 0


def test_log_lines_are_json_with_the_email_id(api_url: str, logs: list[Path]) -> None:
    email_id = send(api_url, Recipient="jsonlog@shop.example", Message="m")
    final_status(api_url, email_id)

    def lines_about() -> list[dict[str, object]]:
        found = []
        for path in logs:
            for line in path.read_text(errors="replace").splitlines():
                if email_id in line and line.startswith("{"):
                    found.append(json.loads(line))
        return found

    entries = wait_for(
        lambda: any(e["logger"] == "worker.delivery" for e in lines_about()) and lines_about(),
        10,
        "the worker's JSON line about the e-mail",
    )
    assert any(e["logger"] == "api.emails" for e in entries)
    assert all(entry["email_id"] == email_id for entry in entries)
    assert {"ts", "level", "logger", "message"} <= set(entries[0])
