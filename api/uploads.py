"""Uploaded attachments: multipart file parts and base64 JSON objects, spooled to disk.

Each upload is written to the spool as it streams in and counted against the attachment size
limit while it does, so reading stops as soon as a request is over it. The files of a request
are held in ``flask.g`` until an accepted e-mail claims them; a teardown hook deletes whatever
no e-mail claimed, so nothing spooled survives a refused request (or a repeated one).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from typing import IO, Any, cast

from flask import Request, g
from werkzeug.datastructures import Headers, MultiDict
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge
from werkzeug.formparser import MultiPartParser
from werkzeug.http import parse_options_header

from api.charsets import Field
from api.services import services
from mailgate import spool
from mailgate.attachments import content_type
from mailgate.config import Settings
from mailgate.errors import InvalidParameter, ParseError, TooLarge
from mailgate.headers import NotCarried, check_filename
from mailgate.jobs import Attachment
from mailgate.validation import SendRequest, check_encoded_size

MULTIPART_TYPE = "multipart/form-data"
MAX_FIELDS = 100
FORM_OVERHEAD = 64 * 1024
"""Room for part headers and boundaries beyond the fields and the files themselves."""

_PARAMETER = "Attachments"


@dataclass
class _Pending:
    """This request's spool files, and whether an accepted e-mail took them."""

    paths: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    written: int = 0
    claimed: bool = False


def body_limit(settings: Settings) -> int:
    """The most a request carrying uploads may send: the fields plus the attachments."""
    return settings.max_request_bytes + settings.max_attachment_bytes + FORM_OVERHEAD


def read_multipart(request: Request, settings: Settings) -> list[Field]:
    """The form fields of a multipart body, as bytes for :func:`api.charsets.decode`; every
    file part is spooled as one upload."""
    limit = body_limit(settings)
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge("request body too large")
    parser = _FieldBytes(
        stream_factory=lambda **part: _Writer.open(part, settings),
        max_form_memory_size=settings.max_request_bytes,
        max_form_parts=MAX_FIELDS + settings.max_attachments,
    )
    try:
        boundary = request.mimetype_params.get("boundary", "").encode("ascii")
        if not boundary:
            raise ValueError("Missing boundary")
        form, files = parser.parse(
            cast(IO[bytes], _Limited(request.stream, limit)), boundary, request.content_length
        )
    except RequestEntityTooLarge:
        raise TooLarge("a form field is too large, or there are too many parts") from None
    except BadRequest:  # the client hung up mid-body
        raise ParseError("the body ended before its last part") from None
    except ValueError as exc:
        raise ParseError(f"not a valid multipart body: {exc}") from None
    # Every part, also the second of a repeated name (MultiDict.values() gives only the first).
    for part, upload in files.items(multi=True):
        writer = cast(_Writer, upload.stream)
        if not upload.filename:
            if not writer.size:
                writer.file.close()  # a form's unused file input: no file chosen, no bytes
                continue
            # werkzeug has seeked the file back to 0: the count is the writer's own.
            reason = f"the file part {part[:100]!r} has {writer.size} bytes but no file name"
            raise _invalid(reason)
        _pending().attachments.append(writer.finish(upload.filename, upload.content_type or ""))
    return parser.fields(form)


def multipart_fields(request: Request) -> list[Field]:
    """The Ozeki endpoint's multipart reader: the form fields, their text still bytes."""
    return read_multipart(request, services().settings)


def spool_bytes(data: bytes, filename: str, content_type: str, settings: Settings) -> None:
    """Spool one upload given whole (a base64 JSON attachment), under the same limits."""
    writer = _Writer.open({}, settings)
    writer.write(data)
    _pending().attachments.append(writer.finish(filename, content_type))


def with_uploads(request: SendRequest, settings: Settings) -> SendRequest:
    """The request with this request's uploads after its path attachments, within the limits."""
    pending: _Pending | None = g.get("mailgate_uploads")
    if pending is None or not pending.attachments:  # most requests upload nothing
        return request
    uploads = tuple(pending.attachments)
    every = request.attachments + uploads
    if len(every) > settings.max_attachments:
        raise _invalid(f"more than {settings.max_attachments} files")
    if sum(a.size for a in every) > settings.max_attachment_bytes:
        raise _invalid(f"over {settings.max_attachment_bytes} bytes in total")
    request = replace(request, attachments=every)
    check_encoded_size(request, settings)
    return request


def claim_uploads() -> None:
    """A new e-mail now owns this request's uploads (else they are deleted at teardown)."""
    pending: _Pending | None = g.get("mailgate_uploads")
    if pending is not None:  # most requests upload nothing
        pending.claimed = True


def discard_unclaimed(_: BaseException | None = None) -> None:
    """Teardown: delete the uploads no accepted e-mail took."""
    pending: _Pending | None = g.pop("mailgate_uploads", None)
    if pending is None:
        return
    kept = {a.path for a in pending.attachments} if pending.claimed else set()
    spool.discard([path for path in pending.paths if path not in kept])


def _pending() -> _Pending:
    if "mailgate_uploads" not in g:
        g.mailgate_uploads = _Pending()
    found: _Pending = g.mailgate_uploads
    return found


def _invalid(reason: str) -> InvalidParameter:
    return InvalidParameter(_PARAMETER, reason, "SendEmail")


class _Writer:
    """A spool file being written: counts the request's upload bytes and hashes as it goes."""

    def __init__(self, path: str, fd: int, settings: Settings) -> None:
        self.path = path
        self.file = os.fdopen(fd, "w+b")
        self.settings = settings
        self.digest = hashlib.sha256()
        self.size = 0
        """Bytes written: the file's position is no guide once the parser seeks it back."""

    @classmethod
    def open(cls, _part: dict[str, Any], settings: Settings) -> _Writer:
        pending = _pending()
        if len(pending.paths) >= settings.max_attachments:
            raise _invalid(f"more than {settings.max_attachments} files")
        path, fd = spool.create(spool.spool_root(settings))
        pending.paths.append(path)  # registered first: the teardown deletes it whatever happens
        return cls(path, fd, settings)

    def write(self, data: bytes) -> int:
        pending = _pending()
        pending.written += len(data)
        if pending.written > self.settings.max_attachment_bytes:
            raise _invalid(f"over {self.settings.max_attachment_bytes} bytes in total")
        self.digest.update(data)
        self.size += len(data)
        return self.file.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def finish(self, raw_name: str, declared_type: str) -> Attachment:
        """Close the file and describe it as an attachment with the caller's file name."""
        self.file.flush()
        info = os.fstat(self.file.fileno())
        self.file.close()
        filename = _filename(raw_name)
        return Attachment(
            path=self.path,
            size=info.st_size,
            mtime_ns=info.st_mtime_ns,
            filename=filename,
            content_type=content_type(declared_type, filename),
            sha256=self.digest.hexdigest(),
            device=info.st_dev,
            inode=info.st_ino,
            ctime_ns=info.st_ctime_ns,
        )


class _FieldBytes(MultiPartParser):
    """werkzeug's multipart parser, keeping each field's bytes and the charset its part
    declares, for :mod:`api.charsets` to decode by the request's charset. werkzeug 3 has no
    charset option: it decodes a field as UTF-8 (or a part's ISO-8859-1) with U+FFFD in place
    of what it cannot. Its ``get_part_charset`` hook names the codec; latin-1 maps each byte to
    one character, so the bytes come back exactly."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.declared: dict[str | None, list[str | None]] = {}

    def get_part_charset(self, headers: Headers) -> str:
        """Called once per field, in order, as its value is decoded."""
        name = parse_options_header(headers.get("content-disposition"))[1].get("name")
        charset = parse_options_header(headers.get("content-type"))[1].get("charset")
        self.declared.setdefault(name, []).append(charset)
        return "latin-1"

    def fields(self, form: MultiDict[str, str]) -> list[Field]:
        """The fields as (name, value bytes, the charset the part declares)."""
        if None in form:
            raise ParseError("a form field has no name")
        return [
            (name, value.encode("latin-1"), charset)
            for name in form
            for value, charset in zip(form.getlist(name), self.declared[name], strict=True)
        ]


class _Limited:
    """The request body, read no further than ``limit`` bytes (a chunked body has no length)."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self.stream = stream
        self.left = limit

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size if size >= 0 else self.left + 1)
        self.left -= len(data)
        if self.left < 0:
            raise TooLarge("request body too large")
        return data


def _filename(raw: str) -> str:
    # Only the last component: a browser or a PBX may send a whole client-side path.
    name = re.split(r"[\\/]", raw)[-1].strip()
    if not name:
        raise _invalid("an uploaded file has no file name")
    if len(name) > 255:
        raise _invalid("an uploaded file name is longer than 255 characters")
    # The same check as a path's file name: no control character, no encoded word that a
    # Content-Disposition header would not carry exactly.
    try:
        check_filename(name)
    except NotCarried as exc:
        raise _invalid(f"an uploaded file name: {exc}") from None
    return name
