"""The accept path's shortcuts give exactly what the slow, obvious code gives.

Each shortcut (issue 12: cut the API's CPU per request) is checked against the reference it
replaced: the XML text against ElementTree, the cached address check against email-validator,
the job's JSON against ``asdict``, the task message template against Celery and kombu's build.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import asdict

import email_validator
import pytest

from api.ozeki import Field, render, render_etree
from mailgate.broker import build_task_message, make_celery, redis_task_message
from mailgate.config import Settings
from mailgate.errors import InvalidParameter
from mailgate.jobs import Attachment, EmailJob
from mailgate.validation import normalize_address

XML_CASES: list[tuple[int, str, list[Field]]] = [
    (200, "Command successfully executed", [("EmailId", str(uuid.uuid4()))]),
    (302, "Invalid parameter", [("Reason", "Recipient: not a valid address: <a&b> \"q\" 'x'")]),
    (300, "Parse error", [("Reason", "")]),
    (200, "ok", [("Subject", "tab\tcr\rlf\n nul\x00 esc\x1b bad\ufffe ok\u00e9 \U0001f600")]),
    (200, "ok", [("LastError", "x" * 1200)]),
    (
        200,
        "ok",
        [
            (
                "History",
                [
                    (
                        "Attempt",
                        [
                            ("Number", "1"),
                            ("At", "2026-01-01T00:00:00Z"),
                            ("Outcome", "Retrying"),
                            ("Detail", "421 <busy>"),
                        ],
                    )
                ],
            ),
            ("Empty", []),
        ],
    ),
    (200, "]]> &amp; &#x41; <![CDATA[x]]>", []),
]


@pytest.mark.parametrize(
    ("code", "message", "fields"),
    XML_CASES,
    ids=["success", "escapes", "empty", "controls", "long", "nested", "markup"],
)
def test_xml_text_is_what_elementtree_writes(code: int, message: str, fields: list[Field]) -> None:
    assert render(code, message, fields) == render_etree(code, message, fields)


BARE_ADDRESSES = [
    "someone@example.com",
    "Some.One+tag@Example.COM",
    "  padded@example.com ",
    "用户@例子.广告",
    "user@xn--fsqu00a.xn--3lr804guic",
    "a@b",
    "no-at-sign",
    "two@@example.com",
    "dot.@example.com",
    "x@-bad-.com",
    '"quoted local"@example.com',
]


def _email_validator(raw: str) -> str:
    """email-validator's own verdict, no mailgate code in between: its normalized address,
    in ASCII where the caller wrote the domain in ASCII (an A-label stays one)."""
    text = raw.strip()
    try:
        checked = email_validator.validate_email(
            text, check_deliverability=False, globally_deliverable=False
        )
    except email_validator.EmailNotValidError as exc:
        return f"refused: not a valid address: {exc}"
    if checked.ascii_email and text.rpartition("@")[2].isascii():
        return str(checked.ascii_email)
    return str(checked.normalized)


def _ours(raw: str) -> str:
    try:
        return normalize_address(raw, "Recipient")
    except InvalidParameter as exc:
        return f"refused: {exc.reason.removeprefix('Recipient: ')}"


@pytest.mark.parametrize("raw", BARE_ADDRESSES, ids=[f"bare-{i}" for i in range(11)])
def test_cached_address_check_is_email_validator(raw: str) -> None:
    expected = _email_validator(raw)
    assert _ours(raw) == expected  # first call: computed
    assert _ours(raw) == expected  # second call: from the cache for valid ones


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("Jane Doe <jane@example.com>", "Jane Doe <jane@example.com>"),
        ('"Doe, Jane" <jane@corp.local>', '"Doe, Jane" <jane@corp.local>'),
        ("  Jane <Jane@EXAMPLE.com> ", "Jane <Jane@example.com>"),
        ("=?utf-8?q?a=0D=0AX:_1?= <x@example.com>", None),
    ],
    ids=["display-name", "quoted-comma", "domain-case", "encoded-line-break"],
)
def test_cached_address_check_keeps_display_names(raw: str, kept: str | None) -> None:
    for _ in range(2):  # computed, then from the cache
        if kept is None:
            assert _ours(raw).startswith("refused: ")
        else:
            assert _ours(raw) == kept


JOBS = [
    EmailJob("id-1", "owner", "s@example.com", ("a@example.com",), "body"),
    EmailJob(
        "id-2",
        "owner",
        "s@example.com",
        ("a@example.com", "b@example.com"),
        "bödy ✓",
        "subject",
        (Attachment("/srv/a.pdf", 10, 123), Attachment("/srv/b", 0, 0)),
        "ext",
        "https://hooks.example/x",
    ),
]


@pytest.mark.parametrize("job", JOBS, ids=["plain", "everything"])
def test_job_json_is_asdicts(job: EmailJob) -> None:
    reference = json.dumps(asdict(job), ensure_ascii=False, separators=(",", ":"))
    assert job.to_json() == reference
    assert EmailJob.from_json(job.to_json()) == job


def test_task_message_template_is_celerys_message_in_every_thread() -> None:
    app = make_celery(Settings.from_env({}))
    seen: list[str] = []

    def check() -> None:
        for _ in range(3):
            email_id = str(uuid.uuid4())
            ours = redis_task_message(app, email_id)
            tag = json.loads(ours)["properties"]["delivery_tag"]
            assert ours == build_task_message(app, email_id, app.thread_oid, tag)
            seen.append(tag)

    check()
    threads = [threading.Thread(target=check) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == len(set(seen)) == 9  # a fresh delivery tag per message
