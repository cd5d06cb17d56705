"""VERP: a return path that names the e-mail, ``bounces+<EmailId>@bounce.example.com``.

With ``MAILGATE_BOUNCE_ADDRESS`` set, the worker sends every e-mail with this envelope sender
(the From header stays what the caller asked), so a report sent back to it names the e-mail in
its own envelope recipient, whatever the report's format.
"""

from __future__ import annotations

import re

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
"""An EmailId (a UUID), in any case."""


def return_path(bounce_address: str, email_id: str) -> str:
    """The envelope sender of one e-mail: the bounce address with ``+<EmailId>``."""
    local, _, domain = bounce_address.rpartition("@")
    return f"{local}+{email_id}@{domain}"


def is_bounce_recipient(address: str, bounce_address: str) -> bool:
    """True for the bounce address itself or with a ``+tag``, in any case."""
    local, _, domain = address.strip().strip("<>").rpartition("@")
    own_local, _, own_domain = bounce_address.rpartition("@")
    base, plus, tag = local.partition("+")
    if domain.lower() != own_domain.lower() or base.lower() != own_local.lower():
        return False
    return not plus or bool(tag)


def email_id_of(address: str, bounce_address: str) -> str | None:
    """The EmailId in a VERP address (lower-cased), or None when it is not one of ours."""
    if not bounce_address or not is_bounce_recipient(address, bounce_address):
        return None
    tag = address.strip().strip("<>").rpartition("@")[0].partition("+")[2]
    return tag.lower() if UUID.fullmatch(tag) else None
