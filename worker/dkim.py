"""DKIM signing (``dkimpy``) of the rendered message, per sender domain.

The worker signs the bytes it is about to send, after they are rendered and checked, with the
key of the From address's domain (or of its nearest parent domain that has one):
relaxed/relaxed canonicalization, rsa-sha256, and the header fields a reader sees and no relay
rewrites. Trace and transport fields that relays add or change on the way (Received,
Return-Path, X-*, ARC-*) are never signed; From is signed once more than it occurs, so a
second From cannot be added without breaking the signature.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import dkim
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

from mailgate.addresses import bare
from mailgate.errors import ConfigError, PermanentDelivery
from worker.smtp import Data

VARIABLE = "MAILGATE_DKIM_KEYS"

SIGNED = (
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-unsubscribe",
    "list-unsubscribe-post",
)
"""The usual set (RFC 6376 section 5.4.1): what the reader sees and how the body is encoded."""

HEADER_NAME = re.compile(rb"^([!-9;-~]+):", re.MULTILINE)


class Signer:
    """The DKIM keys of the sender domains, loaded once; signs what the worker sends."""

    def __init__(self, keys: dict[str, tuple[str, bytes]]) -> None:
        self.keys = keys
        """domain -> (selector, private key PEM)."""

    @classmethod
    def load(cls, entries: Iterable[tuple[str, str, Path]]) -> Signer | None:
        """Read every key now; one that is missing, unreadable or not a private key stops
        start-up (:class:`ConfigError` naming the variable). None when there are no keys."""
        keys: dict[str, tuple[str, bytes]] = {}
        for domain, selector, path in entries:
            try:
                pem = path.read_bytes()
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                raise ConfigError(
                    VARIABLE, f"cannot read the key of {domain}, {path}: {reason}"
                ) from None
            try:
                parse_pem_private_key(pem)
            except (UnparsableKeyError, ValueError, IndexError):
                raise ConfigError(
                    VARIABLE, f"{path} (the key of {domain}) is not an RSA private key in PEM"
                ) from None
            keys[domain] = (selector, pem)
        return cls(keys) if keys else None

    def key_for(self, sender: str) -> tuple[str, str, bytes] | None:
        """(domain, selector, key) for the sender's domain or its nearest parent with a key."""
        domain = bare(sender).rpartition("@")[2].lower().rstrip(".")
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return None
        labels = domain.split(".")
        for i in range(len(labels) - 1):
            candidate = ".".join(labels[i:])
            if candidate in self.keys:
                selector, pem = self.keys[candidate]
                return candidate, selector, pem
        return None

    def sign(self, data: Data, sender: str) -> Data:
        """``data`` with a DKIM-Signature field on top, if the sender's domain has a key (a
        bytearray gets it in place: no second copy of a large message)."""
        key = self.key_for(sender)
        if key is None:
            return data
        domain, selector, pem = key
        head = data.split(b"\r\n\r\n", 1)[0]
        present = [name.lower() for name in HEADER_NAME.findall(head)]
        signed = [name for name in present if name.decode() in SIGNED]
        signed += [b"from"]  # over-signed: no second From can be added
        try:
            field = dkim.sign(
                data,
                selector.encode(),
                domain.encode(),
                pem,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=signed,
            )
        except dkim.DKIMException as exc:
            raise PermanentDelivery(f"message refused: cannot DKIM-sign it: {exc}") from None
        if isinstance(data, bytearray):
            data[:0] = field
            return data
        return bytes(field) + data
