"""The exception tree. Each API error carries its own outcome: the Ozeki ``<Code>`` (``code``),
the REST HTTP status (``http_status``) and the REST error code (``rest_code``), so no caller
maps errors by hand (as click's exceptions carry their ``exit_code``).

MailgateError                       Ozeki  HTTP  REST code
 ├── ConfigError                    a bad environment value; start-up stops with one line
 ├── UserError                      a CLI account operation that cannot be done
 ├── ApiError                       an outcome the API answers with an error
 │    ├── ParseError                 300   400   invalid_json
 │    │    └── UnsupportedMediaType  300   415   unsupported_media_type
 │    ├── UnknownCommand             301   404   not_found
 │    ├── InvalidParameter           302   400   invalid_parameter
 │    │    ├── InvalidField          302   400   invalid_parameter   (names the JSON field)
 │    │    ├── IdempotencyMismatch   302   409   idempotency_conflict
 │    │    ├── NotCancellable        302   409   not_cancellable
 │    │    └── Suppressed            302   422   suppressed   (a recipient that hard-bounced)
 │    ├── AuthRequired               304   401   authentication_required
 │    ├── AuthFailed                 305   401   authentication_failed
 │    ├── SenderNotAllowed           306   403   sender_not_allowed
 │    ├── AddressForbidden           307   403   address_forbidden
 │    ├── NotFound                   404   404   not_found
 │    ├── TooLarge                   413   413   too_large
 │    ├── RateLimited                429   429   rate_limited
 │    └── Unavailable                503   503   unavailable
 ├── DeliveryError                  an SMTP attempt that did not end in 250
 │    ├── TransientDelivery         4xx, timeout, refused connection: retried
 │    └── PermanentDelivery         5xx or an unusable message: Failed at once
 └── EmailFailed                    how the task of a Failed e-mail ends (LastError as text)
"""

from __future__ import annotations

from typing import ClassVar


class MailgateError(Exception):
    """Base of every error mailgate raises on purpose."""


class ConfigError(MailgateError):
    """An environment variable holds a value mailgate cannot use."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class UserError(MailgateError):
    """An account operation (add, remove) that cannot be done."""


class ApiError(MailgateError):
    """An API outcome other than success; subclasses fix the outcomes and the message."""

    code: ClassVar[int]
    """The Ozeki ``<Code>`` (the HTTP status there is always 200)."""
    http_status: ClassVar[int]
    """The HTTP status of the REST answer."""
    rest_code: ClassVar[str]
    """The ``error.code`` of the REST answer."""
    template: ClassVar[str]

    def __init__(self, reason: str | None = None, **fields: str) -> None:
        self.fields = fields
        self.reason = reason
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """Ozeki's text for this code, with its fields filled in."""
        return self.template.format(**self.fields)


class ParseError(ApiError):
    code = 300
    http_status = 400
    rest_code = "invalid_json"
    template = "Error occured during parsing message: '{detail}'"

    def __init__(self, detail: str) -> None:
        super().__init__(detail=detail)


class UnknownCommand(ApiError):
    code = 301
    http_status = 404
    rest_code = "not_found"
    template = "Not implemented command: '{command}'"

    def __init__(self, command: str) -> None:
        super().__init__(command=command)


class InvalidParameter(ApiError):
    code = 302
    http_status = 400
    rest_code = "invalid_parameter"
    template = "Missing or invalid parameter '{name}' for command '{command}'"

    def __init__(self, name: str, reason: str, command: str = "") -> None:
        super().__init__(reason, name=name, command=command)
        self.name = name


class AuthRequired(ApiError):
    code = 304
    http_status = 401
    rest_code = "authentication_required"
    template = "Authentication required"


class AuthFailed(ApiError):
    code = 305
    http_status = 401
    rest_code = "authentication_failed"
    template = "Authentication failed, bad username or password"


class SenderNotAllowed(ApiError):
    code = 306
    http_status = 403
    rest_code = "sender_not_allowed"
    template = "User is not allowed to use API in ACL"


class AddressForbidden(ApiError):
    code = 307
    http_status = 403
    rest_code = "address_forbidden"
    template = "Use API from this address is forbidden"


class NotFound(ApiError):
    code = 404
    http_status = 404
    rest_code = "not_found"
    template = "Email not found"


class TooLarge(ApiError):
    code = 413
    http_status = 413
    rest_code = "too_large"
    template = "Request too large"


class RateLimited(ApiError):
    code = 429
    http_status = 429
    rest_code = "rate_limited"
    template = "Rate limit exceeded"

    def __init__(self, reason: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        """Seconds after which a retry may succeed (REST ``Retry-After``), where the error
        knows better than the rate windows."""


class Unavailable(ApiError):
    code = 503
    http_status = 503
    rest_code = "unavailable"
    template = "Service unavailable, nothing was queued"

    def __init__(self, reason: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        """Seconds after which a retry may succeed (REST ``Retry-After``), where known."""


class UnsupportedMediaType(ParseError):
    """A REST body that is not ``application/json``."""

    http_status = 415
    rest_code = "unsupported_media_type"

    def __init__(self, mimetype: str, expected: str = "application/json") -> None:
        super().__init__(f"unsupported content type {mimetype[:100]!r}, use {expected}")


class InvalidField(InvalidParameter):
    """A REST JSON field at fault, named as the caller wrote it (never mapped from an Ozeki
    name)."""


class IdempotencyMismatch(InvalidParameter):
    """An idempotency key reused with different content."""

    http_status = 409
    rest_code = "idempotency_conflict"

    def __init__(self, name: str = "IdempotencyKey", command: str = "SendEmail") -> None:
        super().__init__(name, "already used with different content", command)


class NotCancellable(InvalidParameter):
    """The e-mail is already being sent, sent, or failed: CancelEmail cannot stop it."""

    http_status = 409
    rest_code = "not_cancellable"

    def __init__(self, status: str, name: str = "EmailId") -> None:
        reason = (
            f"the e-mail is {status}: only Scheduled, Queued or Retrying e-mail can be cancelled"
        )
        super().__init__(name, reason, "CancelEmail")
        self.status = status


class Suppressed(InvalidParameter):
    """A recipient that hard-bounced for this account lately: refused at acceptance until its
    suppression ends (MAILGATE_SUPPRESSION_SECONDS, or ``mailgate suppressions remove``)."""

    http_status = 422
    rest_code = "suppressed"

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name, reason, "SendEmail")


class DeliveryError(MailgateError):
    """One SMTP attempt failed; ``smtp_response`` holds the server's reply when there was one.

    ``unsent``: the relay failed before the message was offered (no connection, a time-out,
    the greeting, TLS, the login or its OAuth2 token): nothing reached it, so the next relay
    of the route may take the e-mail.
    """

    def __init__(self, reason: str, smtp_response: str | None = None, unsent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.smtp_response = smtp_response
        self.unsent = unsent
        self.rcpt: dict[str, str] = {}
        """Each recipient's reply to RCPT, when the session got that far."""


class TransientDelivery(DeliveryError):
    """Worth another attempt later: 4xx replies, timeouts, refused or dropped connections."""


class PermanentDelivery(DeliveryError):
    """Retrying cannot help: 5xx replies, or a message that cannot be built."""


class EmailFailed(MailgateError):
    """The e-mail is ``Failed``: its Celery task ends in FAILURE with ``LastError`` as the
    exception's text, so Flower's Failed filter and counts find it."""
