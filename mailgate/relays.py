"""Relays: where and how the worker hands e-mail over, parsed from SMTP URLs.

A *route* is one or more relays tried in order (``MAILGATE_SMTP_URL``, or an account's own
``smtp`` in the users file): URLs separated by whitespace, or by commas before the next
``smtp://``/``smtps://`` (neither can stand unencoded inside a URL's host or options). Each
relay authenticates with nothing, a user name and password, or OAuth2 (``AUTH XOAUTH2``):

- ``oauth=m365``: Microsoft Entra ID client credentials, ``CLIENT_ID:SECRET@`` (or
  ``CLIENT_ID@`` with ``cert_file``, the certificate and its key), ``tenant``, ``mailbox``;
- ``oauth=google``: a service account's key file (``key_file``) and the user it acts as
  (``mailbox``);
- ``oauth=client_credentials``: any RFC 6749 token endpoint (``token_url``), ``CLIENT_ID:SECRET@``,
  ``scope``, ``mailbox``.

Parsing checks the form only; files named here (keys, certificates) are read where they are
used, by the worker, so the API does not need them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from mailgate.errors import ConfigError

M365_AUTHORITY = "https://login.microsoftonline.com"
M365_SCOPE = "https://outlook.office365.com/.default"
GOOGLE_SCOPE = "https://mail.google.com/"

OAUTH_KINDS = ("m365", "google", "client_credentials")
FLAGS = ("starttls", "verify")
OAUTH_OPTIONS = (
    "oauth",
    "tenant",
    "mailbox",
    "token_url",
    "scope",
    "key_file",
    "cert_file",
    "cert_thumbprint",
    "authority",
)

# Between two URLs: whitespace, or a comma that the next URL's scheme follows.
SEPARATOR = re.compile(r"\s+|,\s*(?=smtps?://)", re.IGNORECASE)


@dataclass(frozen=True)
class OAuth2:
    """Client credentials for ``AUTH XOAUTH2`` (see the module for the three kinds)."""

    kind: str
    mailbox: str
    """The address the relay is told the session sends as (XOAUTH2 ``user=``)."""
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    token_url: str = ""
    """The token endpoint (client_credentials); for m365 the authority (with the tenant)."""
    scope: str = ""
    key_file: str = ""
    """google: the service account's JSON key."""
    cert_file: str = ""
    """m365: a PEM file with the certificate and its private key, instead of a secret."""
    cert_thumbprint: str = ""


@dataclass(frozen=True)
class SmtpTarget:
    """One relay: parsed from one SMTP URL."""

    host: str
    port: int
    ssl: bool = False
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    verify: bool = True
    oauth: OAuth2 | None = None

    @property
    def name(self) -> str:
        """``host:port``, as the status shows the relay that took an e-mail (no credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def parse(cls, url: str, variable: str = "MAILGATE_SMTP_URL") -> SmtpTarget:
        """Read ``smtp://[user:pass@]host:port[?starttls=true]``, ``smtps://...``, with OAuth2
        options (see the module)."""
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("smtp", "smtps"):
            raise ConfigError(variable, "must start with smtp:// or smtps://")
        if not parts.hostname:
            raise ConfigError(variable, "has no host")
        try:
            port = parts.port or (465 if parts.scheme.lower() == "smtps" else 25)
        except ValueError as exc:
            raise ConfigError(variable, "has an invalid port") from exc
        query = {k.lower(): v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {*FLAGS, *OAUTH_OPTIONS}
        if unknown:
            raise ConfigError(variable, f"unknown option {sorted(unknown)[0]!r}")
        flags = {}
        for name in FLAGS:
            value = query.get(name, "true" if name == "verify" else "false").lower()
            if value not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(variable, f"option {name} must be true or false")
            flags[name] = value in ("true", "1", "yes")
        ssl = parts.scheme.lower() == "smtps"
        if ssl and flags["starttls"]:
            raise ConfigError(variable, "smtps:// and starttls=true exclude each other")
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        oauth = None
        if "oauth" in query:
            oauth = _oauth(query, username or "", password or "", variable)
            username = password = None
        elif set(query) & set(OAUTH_OPTIONS):
            option = sorted(set(query) & set(OAUTH_OPTIONS))[0]
            raise ConfigError(
                variable, f"option {option} needs oauth=m365, google or client_credentials"
            )
        return cls(
            host=parts.hostname,
            port=port,
            ssl=ssl,
            starttls=flags["starttls"],
            username=username,
            password=password,
            verify=flags["verify"],
            oauth=oauth,
        )


Route = tuple[SmtpTarget, ...]
"""Relays in the order they are tried."""


def split_route(text: str) -> list[str]:
    """The URLs of a route's text (see the module for the separators)."""
    return [url for url in SEPARATOR.split(text.strip()) if url]


def parse_route(text: str, variable: str = "MAILGATE_SMTP_URL") -> Route:
    """One or more relays, in order; at least one."""
    urls = split_route(text)
    if not urls:
        raise ConfigError(variable, "names no relay")
    return tuple(SmtpTarget.parse(url, variable) for url in urls)


def route_names(route: Route) -> str:
    """The relays of a route for people: ``host:port`` each, no credentials."""
    return ", ".join(target.name for target in route)


def _oauth(query: dict[str, str], client_id: str, secret: str, variable: str) -> OAuth2:
    """The OAuth2 part of a relay URL, each kind with what it needs."""
    kind = query["oauth"].lower()
    if kind not in OAUTH_KINDS:
        raise ConfigError(variable, f"oauth must be one of {', '.join(OAUTH_KINDS)}")
    mailbox = query.get("mailbox", "")
    if not mailbox or "@" not in mailbox:
        raise ConfigError(variable, "oauth needs mailbox=ADDRESS, the mailbox to send as")
    if not mailbox.isascii():
        raise ConfigError(variable, "mailbox must be an ASCII address (XOAUTH2 sends it as is)")
    common = {"kind": kind, "mailbox": mailbox}
    scope = query.get("scope", "")

    def refuse(*names: str) -> None:
        for name in names:
            if query.get(name):
                raise ConfigError(variable, f"option {name} does not go with oauth={kind}")

    if kind == "google":
        refuse("tenant", "token_url", "cert_file", "cert_thumbprint", "authority")
        if client_id or secret:
            raise ConfigError(variable, "oauth=google takes key_file=, not user:password@")
        if not query.get("key_file"):
            raise ConfigError(
                variable, "oauth=google needs key_file=PATH (the service account's JSON key)"
            )
        return OAuth2(**common, key_file=query["key_file"], scope=scope or GOOGLE_SCOPE)
    if not client_id:
        raise ConfigError(variable, f"oauth={kind} needs the client id as the URL's user name")
    if kind == "m365":
        refuse("token_url", "key_file")
        tenant = query.get("tenant", "")
        if not re.fullmatch(r"[A-Za-z0-9.-]{1,100}", tenant):
            raise ConfigError(
                variable, "oauth=m365 needs tenant=TENANT_ID (or the tenant's domain)"
            )
        cert, thumbprint = query.get("cert_file", ""), query.get("cert_thumbprint", "")
        if bool(secret) == bool(cert):
            raise ConfigError(
                variable,
                "oauth=m365 needs a client secret (CLIENT_ID:SECRET@) "
                "or cert_file= (the certificate and its key), one of the two",
            )
        authority = query.get("authority", M365_AUTHORITY).rstrip("/")
        if not authority.lower().startswith("https://"):
            raise ConfigError(variable, "authority must be an https:// URL")
        return OAuth2(
            **common,
            scope=scope or M365_SCOPE,
            client_id=client_id,
            client_secret=secret,
            token_url=f"{authority}/{tenant}",
            cert_file=cert,
            cert_thumbprint=thumbprint,
        )
    refuse("tenant", "key_file", "cert_file", "cert_thumbprint", "authority")
    token_url = query.get("token_url", "")
    if not token_url.lower().startswith("https://"):
        raise ConfigError(variable, "oauth=client_credentials needs token_url=https://...")
    if not secret:
        raise ConfigError(variable, "oauth=client_credentials needs CLIENT_ID:SECRET@")
    return OAuth2(
        **common, client_id=client_id, client_secret=secret, token_url=token_url, scope=scope
    )
