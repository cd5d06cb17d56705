"""Each ApiError carries its outcomes (Ozeki code, HTTP status, REST code); renderings use them."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

import pytest

from api import ozeki
from api.rest import CODES, error_response
from mailgate import errors
from mailgate.errors import ApiError


def subclasses(cls: type[ApiError] = ApiError) -> list[type[ApiError]]:
    return [sub for child in cls.__subclasses__() for sub in (child, *subclasses(child))]


SAMPLES: dict[type[ApiError], ApiError] = {
    errors.ParseError: errors.ParseError("bad body"),
    errors.UnsupportedMediaType: errors.UnsupportedMediaType("text/plain"),
    errors.UnknownCommand: errors.UnknownCommand("Nope"),
    errors.InvalidParameter: errors.InvalidParameter("Recipient", "missing", "SendEmail"),
    errors.InvalidField: errors.InvalidField("recipients", "must be an array of strings"),
    errors.IdempotencyMismatch: errors.IdempotencyMismatch(),
    errors.NotCancellable: errors.NotCancellable("Sent"),
    errors.Suppressed: errors.Suppressed("Recipient", "x@y is suppressed: it bounced"),
    errors.AuthRequired: errors.AuthRequired(),
    errors.AuthFailed: errors.AuthFailed(),
    errors.SenderNotAllowed: errors.SenderNotAllowed("u may not send as x@y"),
    errors.AddressForbidden: errors.AddressForbidden(),
    errors.NotFound: errors.NotFound(),
    errors.TooLarge: errors.TooLarge("request body too large"),
    errors.RateLimited: errors.RateLimited(),
    errors.Unavailable: errors.Unavailable("Redis is unavailable"),
}

EXPECTED = {
    errors.ParseError: (300, 400, "invalid_json"),
    errors.UnsupportedMediaType: (300, 415, "unsupported_media_type"),
    errors.UnknownCommand: (301, 404, "not_found"),
    errors.InvalidParameter: (302, 400, "invalid_parameter"),
    errors.InvalidField: (302, 400, "invalid_parameter"),
    errors.IdempotencyMismatch: (302, 409, "idempotency_conflict"),
    errors.NotCancellable: (302, 409, "not_cancellable"),
    errors.Suppressed: (302, 422, "suppressed"),
    errors.AuthRequired: (304, 401, "authentication_required"),
    errors.AuthFailed: (305, 401, "authentication_failed"),
    errors.SenderNotAllowed: (306, 403, "sender_not_allowed"),
    errors.AddressForbidden: (307, 403, "address_forbidden"),
    errors.NotFound: (404, 404, "not_found"),
    errors.TooLarge: (413, 413, "too_large"),
    errors.RateLimited: (429, 429, "rate_limited"),
    errors.Unavailable: (503, 503, "unavailable"),
}
"""The contract: what each error answers on both API styles."""


def test_every_api_error_is_sampled_and_in_the_docstring_tree() -> None:
    assert set(subclasses()) == set(SAMPLES) == set(EXPECTED)
    assert errors.__doc__ is not None
    for cls in subclasses():
        assert cls.__name__ in errors.__doc__, f"{cls.__name__} missing from the tree"


@pytest.mark.parametrize("cls", subclasses(), ids=lambda cls: cls.__name__)
def test_every_api_error_carries_its_three_outcomes(cls: type[ApiError]) -> None:
    assert isinstance(cls.code, int) and 300 <= cls.code < 600
    assert isinstance(cls.http_status, int) and 400 <= cls.http_status < 600
    assert isinstance(cls.rest_code, str) and cls.rest_code in CODES
    assert (cls.code, cls.http_status, cls.rest_code) == EXPECTED[cls]


@pytest.mark.parametrize("cls", subclasses(), ids=lambda cls: cls.__name__)
def test_the_rest_and_ozeki_renderings_use_the_outcomes(cls: type[ApiError]) -> None:
    exc = SAMPLES[cls]
    rest = error_response(exc)
    assert rest.status_code == cls.http_status
    assert json.loads(rest.get_data())["error"]["code"] == cls.rest_code
    xml = ozeki.error(exc)
    assert xml.status_code == 200  # Ozeki: the outcome is the <Code>, never the HTTP status
    root = ET.fromstring(xml.get_data())
    assert root.findtext("Code") == str(cls.code)
    assert root.findtext("Message") == exc.message


def test_a_new_error_needs_no_mapping_anywhere() -> None:
    class Teapot(errors.Unavailable):
        code = 399
        http_status = 418
        rest_code = "teapot"

    exc = Teapot("short and stout")
    assert error_response(exc).status_code == 418
    assert json.loads(error_response(exc).get_data())["error"] == {
        "code": "teapot",
        "field": None,
        "message": "short and stout",
    }
    assert ET.fromstring(ozeki.error(exc).get_data()).findtext("Code") == "399"
