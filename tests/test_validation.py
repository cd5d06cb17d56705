"""SendEmail validation and the attachment sandbox, as plain functions on real files."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from mailgate.attachments import AttachmentRefused, check_path, map_path, read_checked
from mailgate.config import Settings
from mailgate.errors import InvalidParameter, TooLarge
from mailgate.validation import parse_recipients, validate_send


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    folder.mkdir()
    (folder / "ok.txt").write_text("fine")
    return folder


@pytest.fixture
def settings(root: Path) -> Settings:
    return replace(Settings.from_env({}), attachment_roots=(root.resolve(),))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a@x.example", ("a@x.example",)),
        ("a@x.example; b@y.example", ("a@x.example", "b@y.example")),
        ("a@x.example,b@y.example,", ("a@x.example", "b@y.example")),
        ("a@x.example;A@x.example", ("a@x.example",)),
    ],
    ids=["one", "semicolon", "comma-trailing", "repeat"],
)
def test_recipients_are_split_and_deduplicated(raw: str, expected: tuple[str, ...]) -> None:
    assert parse_recipients(raw, 50) == expected


@pytest.mark.parametrize(
    "raw",
    ["", " ; ", "plainaddress", "a@", "a@b@c.example", "a@x.example\nBcc: v@x.example",
     "a@x.example\x00"],
    ids=["empty", "separators", "no-at", "no-domain", "two-at", "lf", "nul"],
)  # fmt: skip
def test_bad_recipients_are_302(raw: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        parse_recipients(raw, 50)
    assert caught.value.name == "Recipient"


def test_fifty_recipients_pass_and_fifty_one_do_not() -> None:
    addresses = [f"r{i}@x.example" for i in range(51)]
    assert len(parse_recipients(";".join(addresses[:50]), 50)) == 50
    with pytest.raises(InvalidParameter) as caught:
        parse_recipients(";".join(addresses), 50)
    assert caught.value.name == "Recipient"


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [("subject", "a\rb", "Subject"), ("subject", "a\nb", "Subject"),
     ("sender", "x@y.example\r\n", "Sender"), ("apiextension", "ext\n", "ApiExtension")],
    ids=["subject-cr", "subject-lf", "sender-crlf", "apiextension-lf"],
)  # fmt: skip
def test_header_breakers_are_refused(
    settings: Settings, field: str, value: str, named: str
) -> None:
    params = {"recipient": "a@x.example", "message": "m", field: value}
    with pytest.raises(InvalidParameter) as caught:
        validate_send(params, settings)
    assert caught.value.name == named


def test_message_over_the_limit_is_413(settings: Settings) -> None:
    params = {"recipient": "a@x.example", "message": "é" * settings.max_message_bytes}
    with pytest.raises(TooLarge):
        validate_send(params, settings)


def _symlink_out(root: Path) -> str:
    (root / "link").symlink_to("/etc/passwd")
    return str(root / "link")


def _dir(root: Path) -> str:
    (root / "sub").mkdir()
    return str(root / "sub")


def _fifo(root: Path) -> str:
    os.mkfifo(root / "pipe")
    return str(root / "pipe")


def _unreadable(root: Path) -> str:
    path = root / "secret.txt"
    path.write_text("x")
    path.chmod(0)
    return str(path)


@pytest.mark.parametrize(
    "make",
    [
        lambda r: "relative.txt",
        lambda r: "~/ok.txt",
        lambda r: "C:\\example.txt",
        lambda r: "\\\\server\\share\\f.txt",
        lambda r: "file:///etc/passwd",
        lambda r: f"{r}/ok.txt\x00.pdf",
        lambda r: f"{r}/../outside.txt",
        lambda r: "/etc/passwd",
        lambda r: "/dev/zero",
        lambda r: "/proc/self/environ",
        lambda r: f"{r}/missing.txt",
        _symlink_out,
        _dir,
        _fifo,
    ],
    ids=["relative", "tilde", "windows", "unc", "url", "nul", "dotdot", "outside", "device",
         "proc", "missing", "symlink-out", "directory", "fifo"],
)  # fmt: skip
def test_sandbox_refuses(root: Path, make: object) -> None:
    with pytest.raises(AttachmentRefused):
        check_path(make(root), (root.resolve(),))  # type: ignore[operator]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_refused(root: Path) -> None:
    with pytest.raises(AttachmentRefused):
        check_path(_unreadable(root), (root.resolve(),))


def test_no_roots_means_no_attachments(root: Path) -> None:
    with pytest.raises(AttachmentRefused, match="disabled"):
        check_path(str(root / "ok.txt"), ())


def test_symlink_inside_the_root_is_followed(root: Path) -> None:
    (root / "alias.txt").symlink_to(root / "ok.txt")
    found = check_path(str(root / "alias.txt"), (root.resolve(),))
    assert found.path == str((root / "ok.txt").resolve())
    assert read_checked(found, (root.resolve(),)) == b"fine"


def test_worker_refuses_a_file_changed_or_swapped_after_acceptance(root: Path) -> None:
    roots = (root.resolve(),)
    accepted = check_path(str(root / "ok.txt"), roots)
    (root / "ok.txt").write_text("changed!")
    with pytest.raises(AttachmentRefused, match="changed"):
        read_checked(accepted, roots)
    accepted = check_path(str(root / "ok.txt"), roots)
    (root / "ok.txt").unlink()
    (root / "ok.txt").symlink_to("/etc/passwd")
    with pytest.raises(AttachmentRefused):
        read_checked(accepted, roots)


def test_total_attachment_size_is_limited(root: Path, settings: Settings) -> None:
    (root / "big.bin").write_bytes(b"x" * 1000)
    small = replace(settings, max_attachment_bytes=1500)
    params = {
        "recipient": "a@x.example",
        "message": "m",
        "attachments": f"{root}/big.bin;{root}/big.bin",
    }
    with pytest.raises(InvalidParameter) as caught:
        validate_send(params, small)
    assert caught.value.name == "Attachments"


# Windows paths: read as Windows reads them -----------------------------------------------------


def test_a_windows_path_is_found_in_any_case_inside_the_roots(tmp_path: Path) -> None:
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    for folder in (inside / "Sub", outside):
        folder.mkdir(parents=True)
    (inside / "Sub" / "Voicemail.WAV").write_bytes(b"x")
    (inside / "Straße.txt").write_bytes(b"x")
    for name in ("secret.txt", "SECRET.TXT"):
        (outside / name).write_bytes(b"x")
    path_map = (("c:/rec", str(inside)), ("d:/other", str(outside)))
    roots = (inside.resolve(),)
    assert map_path(r"C:\REC\sub\voicemail.wav", path_map, roots) == str(
        inside / "Sub" / "Voicemail.WAV"
    )
    # Windows compares one character at a time: "ß" is not "SS" there.
    assert map_path(r"C:\Rec\STRASSE.TXT", path_map, roots) == str(inside / "STRASSE.TXT")
    # A folder outside the roots is never listed: no file name of it shows in a refusal, and
    # check_path refuses the path as outside the roots.
    mapped = map_path(r"D:\Other\Secret.Txt", path_map, roots)
    assert mapped == str(outside / "Secret.Txt")
    with pytest.raises(AttachmentRefused, match="outside the attachment roots"):
        check_path(mapped, roots)


@pytest.mark.parametrize(
    ("raw", "local"),
    [
        (r"C:\Rec\a\..\b.txt", "/srv/rec/b.txt"),
        (r"C:\Rec\.\a\\\b.txt", "/srv/rec/a/b.txt"),
        (r"\\PBX\Share\..\..\x.wav", "/mnt/pbx/x.wav"),  # never above the share
        ("C:/Rec/a/../b.txt", "/srv/rec/b.txt"),
    ],
    ids=["dotdot-inside", "dot-and-doubled-separators", "above-the-share", "forward-slashes"],
)
def test_dots_are_resolved_as_windows_resolves_them(raw: str, local: str) -> None:
    assert map_path(raw, (("c:/rec", "/srv/rec"), ("//pbx/share", "/mnt/pbx"))) == local


@pytest.mark.parametrize(
    "raw", [r"C:\Rec\..\hr\salaries.txt", r"C:\Rec\a\..\..\Rec2\x.txt", r"C:\..\Rec\..\x"]
)
def test_a_climb_out_of_the_mapped_prefix_is_refused(raw: str) -> None:
    with pytest.raises(AttachmentRefused, match="MAILGATE_ATTACHMENT_PATH_MAP"):
        map_path(raw, (("c:/rec", "/srv/rec"),))
