"""The docs hold together: every relative link in README.md, docs/*.md and bench/README.md leads
to a file that exists and, with a #fragment, to a heading of that file (GitHub's anchors); and
every example of docs/api.md runs as written and answers as shown."""

from __future__ import annotations

import json
import re
import secrets
import shlex
import shutil
import subprocess
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import pytest

from mailgate.status import StatusStore
from mailgate.users import UserStore
from tests.support import (
    RedisServer,
    Service,
    SmtpServer,
    answers,
    mailgate_env,
    wait_for,
    web_args,
    worker_args,
)

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, ...


def prose(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation other than '-' and '_' dropped,
    spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor; a repeated one gets -1, -2, ... as on GitHub."""
    found: set[str] = set()
    for line in prose(text):
        match = re.match(r"#{1,6} +(.*?) *#* *$", line)
        if match:
            base = anchor(match.group(1))
            name, n = base, 0
            while name in found:
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def broken_links(page: Path) -> list[str]:
    """The relative links in ``page`` whose file or heading does not exist."""
    broken = []
    for line in prose(page.read_text("utf-8")):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if EXTERNAL.match(target):
                continue
            path, _, fragment = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{target}: no file {path}")
            elif fragment and fragment not in anchors(linked.read_text("utf-8")):
                broken.append(f"{target}: no heading #{fragment} in {path or page.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    assert page.exists()
    assert broken_links(page) == []


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Guarantees", "guarantees"),
        ("Procfile (honcho, foreman)", "procfile-honcho-foreman"),
        ("Ozeki API (`/api`)", "ozeki-api-api"),
        ("Each guarantee has a test_x that-fails", "each-guarantee-has-a-test_x-that-fails"),
        ("Against the goals, honestly", "against-the-goals-honestly"),
    ],
    ids=["word", "parentheses", "code", "dash-underscore", "comma"],
)
def test_anchor_follows_githubs_rule(heading: str, expected: str) -> None:
    assert anchor(heading) == expected


def test_a_broken_link_is_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## Real part\n", "utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\nSee [real](other.md#real-part), [here](#page), [web](https://x.example/#n),\n"
        "[missing file](nowhere.md), [missing heading](other.md#fake) and [self](#nope).\n"
        "```\n[in code](ignored.md)\n```\n`[inline](ignored.md)`\n",
        "utf-8",
    )
    assert broken_links(page) == [
        "nowhere.md: no file nowhere.md",
        "other.md#fake: no heading #fake in other.md",
        "#nope: no heading #nope in page.md",
    ]


def test_repeated_headings_get_numbered_anchors() -> None:
    assert anchors("# A\n## Notes\n## Notes\n```\n# not a heading\n```\n") == {
        "a",
        "notes",
        "notes-1",
    }


# docs/api.md's examples, run as written against a real `mailgate web` and worker.

API_PAGE = ROOT / "docs" / "api.md"
EXAMPLE_ID = "6b5c6978-0cd6-4a58-86fc-3d1b279b9208"
"""The EmailId the examples show; each run puts one of its own e-mails' there."""
ASSUMES = re.compile(r"#.*\bAssumes (MAILGATE_[A-Z0-9_]+)=(\"[^\"]*\"|'[^']*'|\S+)")
STABLE_XML = {"Code", "Message", "Status", "Attempts", "Warning"}
STABLE_JSON = {"status", "attempts", "outcome", "delivery_report", "code", "field", "more"}
"""What must be equal to the answer shown; of anything else, only that it is there."""
CANCELLABLE = {"Scheduled", "Queued", "Retrying"}


@dataclass
class Example:
    """One shell command of docs/api.md and the answer shown after it, if any."""

    line: int
    command: str
    shown: str = ""
    """The XML or JSON block after the command's block, or a ``# <Response>…`` line under it."""
    between: str = ""
    """The prose between the block and the answer (it may name the HTTP status)."""


def fenced_blocks(text: str) -> list[tuple[str, list[str], int, str]]:
    """(language, lines, first line number, the text since the previous block) of each block."""
    blocks, lang, body, start, since = [], None, [], 0, []
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            if lang is None:
                lang, body, start = line.strip()[3:], [], number + 1
            else:
                blocks.append((lang, body, start, "\n".join(since)))
                lang, since = None, []
        elif lang is not None:
            body.append(line)
        else:
            since.append(line)
    return blocks


def examples(text: str) -> list[Example]:
    """Every command of the page's ``sh`` blocks, with the answer shown for it."""
    found: list[Example] = []
    blocks = fenced_blocks(text)
    for index, (lang, body, start, _) in enumerate(blocks):
        if lang != "sh":
            continue
        commands: list[Example] = []
        current: list[str] = []
        for offset, line in enumerate(body):
            if not current and line.lstrip().startswith("#"):
                if line.lstrip().startswith("# <") and commands:
                    commands[-1].shown = line.lstrip()[2:]
                continue
            if not current and not line.strip():
                continue
            current.append(line)
            command = "\n".join(current)
            if command.rstrip().endswith(("\\", "|")) or not _complete(command):
                continue
            commands.append(Example(start + offset - len(current) + 1, command))
            current = []
        assert not current, f"docs/api.md:{start}: a command that never ends"
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        if (
            following
            and following[0] in ("xml", "json")
            and not re.search(r"^#", following[3], re.MULTILINE)
        ):  # the next block, before any heading, is the answer to each command of this one
            for example in commands:
                example.shown = example.shown or "\n".join(following[1])
                example.between = following[3]
        found += commands
    return found


def _complete(command: str) -> bool:
    try:
        shlex.split(command)
    except ValueError:  # a quote still open: the command goes on
        return False
    return True


def _xml_pairs(text: str) -> list[tuple[str, str]]:
    return re.findall(r"<(\w+)>([^<]*)</\1>", text)


def _like(shown: object, actual: object, where: str = "") -> list[str]:
    """How ``actual`` (JSON) differs from ``shown``: the same keys, the stable values equal."""
    if isinstance(shown, dict):
        if not isinstance(actual, dict) or set(shown) != set(actual):
            return [f"{where or 'the answer'}: {actual!r} has not the keys of {shown!r}"]
        return [
            problem
            for key, value in shown.items()
            for problem in (
                [f"{where}.{key}: {actual[key]!r}, shown {value!r}"]
                if key in STABLE_JSON and actual[key] != value
                else _like(value, actual[key], f"{where}.{key}")
            )
        ]
    if isinstance(shown, list) and shown:
        if not isinstance(actual, list) or not actual:
            return [f"{where}: {actual!r} is empty, shown {shown!r}"]
        return _like(shown[0], actual[0], f"{where}[0]")
    return []


def differences(example: Example, output: str) -> list[str]:
    """How the command's output differs from the answer shown (or from success, if none)."""
    status, body = None, output
    if output.startswith("HTTP/"):
        head, _, body = output.replace("\r\n", "\n").partition("\n\n")
        status = int(head.split()[1])
        named = re.search(r"`(\d{3})[ `]", example.between)
        if named and int(named.group(1)) != status:
            return [f"HTTP {status}, the docs say {named.group(1)}"]
    if body.startswith("<?xml"):
        root = ElementTree.fromstring(body)
        shown = _xml_pairs(example.shown) or [("Code", "200")]
        problems = []
        for name, text in shown:
            element = root.find(f".//{name}")
            if element is None:
                problems.append(f"no <{name}> in {body}")
            elif name in STABLE_XML and element.text != text:
                problems.append(f"<{name}>{element.text}</{name}>, shown {text!r}: {body}")
        return problems
    answer = json.loads(body)
    if example.shown:
        return _like(json.loads(example.shown), answer)
    return [f"an error: {body}"] if "error" in answer or (status or 200) >= 300 else []


def test_the_examples_are_found() -> None:
    found = examples(API_PAGE.read_text("utf-8"))
    sh_text = "\n".join(
        "\n".join(body)
        for lang, body, _, _ in fenced_blocks(API_PAGE.read_text("utf-8"))
        if lang == "sh"
    )
    assert len(found) == len(re.findall(r"^\s*(?:\S.*\| *\n\s*)?curl ", sh_text, re.M)) >= 15
    assert all("curl " in example.command for example in found)
    cancel = next(e for e in found if "CancelEmail" in e.command)
    assert _xml_pairs(cancel.shown)[-1] == ("Status", "Cancelled")
    warned = next(e for e in found if "&Bc=" in e.command)
    assert ("Warning", "unknown parameters ignored: bc") in _xml_pairs(warned.shown)
    sent = next(e for e in found if e.command.startswith("curl -si"))
    assert json.loads(sent.shown)["status"] == "Queued" and "`202 Accepted`" in sent.between


def test_a_difference_from_the_answer_shown_is_reported() -> None:
    example = Example(1, "curl x", "<Response><Code>200</Code><Status>Sent</Status></Response>")
    failed = '<?xml version="1.0"?><Response><Code>200</Code><Status>Failed</Status></Response>'
    assert differences(example, failed) == [f"<Status>Failed</Status>, shown 'Sent': {failed}"]
    listing = Example(1, "curl y", '{"emails": [{"status": "Failed"}], "more": false}')
    assert differences(listing, '{"emails": [], "more": false}') == [
        ".emails: [] is empty, shown [{'status': 'Failed'}]"
    ]
    head = "HTTP/1.1 400 BAD REQUEST\r\n\r\n"
    assert differences(Example(1, "z", "{}", "`202 Accepted`"), head + "{}") == [
        "HTTP 400, the docs say 202"
    ]


@pytest.mark.integration
def test_every_api_example_answers_as_shown(
    redis_server: RedisServer, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    """Each curl of docs/api.md, through a shell in a folder laid out as `make run` lays it
    out (var/attachments/hello.txt, the account ivr that may use any sender), against a real
    `mailgate web` and worker with the settings the page's `# Assumes` lines name."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed: the examples are curl commands")
    page = API_PAGE.read_text("utf-8")
    folder = tmp_path / "project"
    attachments = folder / "var" / "attachments"
    attachments.mkdir(parents=True)
    (attachments / "hello.txt").write_text("A sample attachment from mailgate run.\n")
    db = 7  # a database of its own, so that no other worker of the session takes its e-mails
    redis_url = f"redis://127.0.0.1:{redis_server.port}/{db}"
    store = StatusStore.from_url(redis_url, 3600)
    store.redis.flushdb()
    assumed = {
        name: value.strip("'\"").replace("$PWD", str(folder))
        for name, value in ASSUMES.findall(page)
    }
    assert set(assumed) == {"MAILGATE_ATTACHMENT_PATH_MAP", "MAILGATE_CALLBACK_ALLOWED"}
    env = {
        **mailgate_env(
            folder / "var", redis_url, smtp_server.url, ATTACHMENT_ROOTS=str(attachments)
        ),
        **assumed,
    }
    password = secrets.token_urlsafe(12)
    UserStore(Path(env["MAILGATE_USERS_FILE"])).add("ivr", password, ("*",))  # as make run does
    url = f"http://127.0.0.1:{env['MAILGATE_PORT']}"
    services = [
        Service("web", web_args(), env, tmp_path / "web.log", cwd=folder).start(),
        Service("worker", worker_args(), env, tmp_path / "worker.log", cwd=folder).start(),
    ]
    try:
        wait_for(lambda: answers(f"{url}/healthz"), 30, "the API")
        services[1].wait_output(r"ready\.", 60)
        # The listing example shows an account with one e-mail that failed within the hour.
        refused = _send(url, password, "reject-docs@example.com")
        wait_for(lambda: _status(store, refused) == "Failed", 30, "the refused e-mail to fail")
        sent: list[str] = []
        problems: list[str] = []
        for example in examples(page):
            command = example.command.replace("http://127.0.0.1:9509", url)
            command = command.replace("PASSWORD", password)
            if EXAMPLE_ID in command:
                command = command.replace(EXAMPLE_ID, _pick(store, sent, example))
            result = subprocess.run(
                ["bash", "-c", command],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=60,
                env={**env, "PWD": str(folder)},
            )
            output = result.stdout
            found = [f"docs/api.md:{example.line}: {p}" for p in differences(example, output)]
            problems += found
            if not found:
                match = re.search(
                    r"<EmailId>([0-9a-f-]{36})</EmailId>|\"id\":\"([0-9a-f-]{36})\"", output
                )
                if match and EXAMPLE_ID not in example.command:
                    sent.append(match.group(1) or match.group(2))
        assert not problems, "\n".join(problems)
        assert len(sent) >= 10
    finally:
        for service in services:
            service.stop()


def _send(url: str, password: str, recipient: str) -> str:
    query = urllib.parse.urlencode(
        {
            "command": "SendEmail",
            "Recipient": recipient,
            "Message": "x",
            "Username": "ivr",
            "Password": password,
        }
    )
    with urllib.request.urlopen(f"{url}/api?{query}", timeout=10) as response:
        found = re.search(rb"<EmailId>([^<]+)</EmailId>", response.read())
    assert found is not None
    return found.group(1).decode()


def _status(store: StatusStore, email_id: str) -> str:
    record = store.get(email_id)
    return record.status.value if record else ""


def _pick(store: StatusStore, sent: list[str], example: Example) -> str:
    """The e-mail an example's EmailId stands for: a cancel takes the latest one that can be
    cancelled; a status read, the latest one in the state its answer shows, once every e-mail
    not scheduled has settled (so that the latest is the one that is meant)."""
    if "CancelEmail" in example.command or "-X DELETE" in example.command:
        return next(i for i in reversed(sent) if _status(store, i) in CANCELLABLE)
    wanted = dict(_xml_pairs(example.shown)).get("Status") or json.loads(example.shown)["status"]
    settled = lambda: all(  # noqa: E731
        _status(store, i) not in {"Queued", "Sending", "Retrying"} for i in sent
    )
    wait_for(settled, 60, "the e-mails sent so far to settle")
    return next(i for i in reversed(sent) if _status(store, i) == wanted)
