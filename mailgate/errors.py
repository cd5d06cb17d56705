"""The exception tree. Each API error carries its own Ozeki code and message.

MailgateError
 ├── ConfigError              a bad environment value; start-up stops with one line
 ├── UserError                a CLI account operation that cannot be done
 ├── ApiError                 an outcome the API answers with a <Code>
 │    ├── ParseError            300
 │    ├── UnknownCommand        301
 │    ├── InvalidParameter      302
 │    ├── AuthRequired          304
 │    ├── AuthFailed            305
 │    ├── SenderNotAllowed      306
 │    ├── NotFound              404
 │    ├── TooLarge              413
 │    ├── RateLimited           429
 │    └── Unavailable           503
 └── DeliveryError            an SMTP attempt that did not end in 250
      ├── TransientDelivery     4xx, timeout, refused connection: retried
      └── PermanentDelivery     5xx or an unusable message: Failed at once
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
    """An API outcome other than success; subclasses fix the code and the message."""

    code: ClassVar[int]
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
    template = "Error occured during parsing message: '{detail}'"

    def __init__(self, detail: str) -> None:
        super().__init__(detail=detail)


class UnknownCommand(ApiError):
    code = 301
    template = "Not implemented command: '{command}'"

    def __init__(self, command: str) -> None:
        super().__init__(command=command)


class InvalidParameter(ApiError):
    code = 302
    template = "Missing or invalid parameter '{name}' for command '{command}'"

    def __init__(self, name: str, reason: str, command: str = "") -> None:
        super().__init__(reason, name=name, command=command)
        self.name = name


class AuthRequired(ApiError):
    code = 304
    template = "Authentication required"


class AuthFailed(ApiError):
    code = 305
    template = "Authentication failed, bad username or password"


class SenderNotAllowed(ApiError):
    code = 306
    template = "User is not allowed to use API in ACL"


class AddressForbidden(ApiError):
    code = 307
    template = "Use API from this address is forbidden"


class NotFound(ApiError):
    code = 404
    template = "Email not found"


class TooLarge(ApiError):
    code = 413
    template = "Request too large"


class RateLimited(ApiError):
    code = 429
    template = "Rate limit exceeded"


class Unavailable(ApiError):
    code = 503
    template = "Service unavailable, nothing was queued"


class DeliveryError(MailgateError):
    """One SMTP attempt failed; ``smtp_response`` holds the server's reply when there was one."""

    def __init__(self, reason: str, smtp_response: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.smtp_response = smtp_response


class TransientDelivery(DeliveryError):
    """Worth another attempt later: 4xx replies, timeouts, refused or dropped connections."""


class PermanentDelivery(DeliveryError):
    """Retrying cannot help: 5xx replies, or a message that cannot be built."""
