"""OAuth2 access tokens for ``AUTH XOAUTH2``: fetched with the credentials of a relay URL,
cached in this worker process, refreshed before they expire.

Three ways to get one, each through the library made for it (no JWT is signed here):

- Microsoft Entra ID (``oauth=m365``): ``msal``'s ``acquire_token_for_client``, with a client
  secret or a certificate;
- Google (``oauth=google``): a ``google-auth`` service account acting as the mailbox;
- any RFC 6749 token endpoint (``oauth=client_credentials``): one ``client_credentials`` POST
  with the client authenticated by HTTP Basic (RFC 6749, section 2.3.1).

Their errors are translated here, once: an endpoint that cannot be reached, times out or
answers 5xx or 429 is a :class:`TransientDelivery` (the e-mail is retried); a client the
endpoint rejects (``invalid_client``, ``unauthorized_client``, ...) is a
:class:`PermanentDelivery` that names the error. Neither ever carries a secret or a token.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from mailgate.errors import DeliveryError, PermanentDelivery, TransientDelivery
from mailgate.relays import OAuth2

Fetch = Callable[[], tuple[str, float]]
"""Gets a new token: (access token, seconds it lives)."""

REFRESH_AHEAD_SECONDS = 300.0
"""A token is renewed this long before it expires (or at three quarters of a shorter life)."""
DEFAULT_LIFETIME = 3600.0
"""For an endpoint that does not say (``expires_in`` is optional in RFC 6749)."""
MAX_DETAIL = 200
PEM_KEY = re.compile(
    r"-----BEGIN (?:RSA |EC )?PRIVATE KEY-----.+?-----END (?:RSA |EC )?PRIVATE KEY-----", re.S
)
PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


class TokenSource:
    """One credential's access token in this process, shared by all its threads."""

    def __init__(self, fetch: Fetch, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._token = ""
        self._renew_at = 0.0
        self.fetched = 0
        """Tokens fetched so far (for the tests and the curious)."""

    def get(self) -> tuple[str, bool]:
        """A token that is not about to expire, and whether it was fetched for this call."""
        with self._lock:
            if self._token and self._clock() < self._renew_at:
                return self._token, False
            return self._renew(), True

    def renew(self, refused: str) -> str:
        """A new token after a relay refused ``refused`` (unless another thread renewed it
        meanwhile: then that one)."""
        with self._lock:
            if self._token and self._token != refused and self._clock() < self._renew_at:
                return self._token
            return self._renew()

    def _renew(self) -> str:
        self._token = ""
        token, lifetime = self._fetch()
        lifetime = max(lifetime, 1.0)
        ahead = min(REFRESH_AHEAD_SECONDS, lifetime / 4)
        self._token, self._renew_at = token, self._clock() + lifetime - ahead
        self.fetched += 1
        return token


def token_source(oauth: OAuth2, timeout: float) -> TokenSource:
    """The token source for a relay's OAuth2 credentials. Reads the key or certificate file
    now, so a missing or unreadable one shows at once (``OSError``, ``ValueError``)."""
    if oauth.kind == "m365":
        return TokenSource(_m365(oauth, timeout))
    if oauth.kind == "google":
        return TokenSource(_google(oauth, timeout))
    return TokenSource(_client_credentials(oauth, timeout))


def _client_credentials(oauth: OAuth2, timeout: float) -> Fetch:
    """RFC 6749 section 4.4: the client's own token, client id and secret by HTTP Basic."""
    session = requests.Session()
    # RFC 6749 2.3.1: both are form-urlencoded before they go into the Basic header.
    auth = (quote(oauth.client_id, safe=""), quote(oauth.client_secret, safe=""))
    form = {"grant_type": "client_credentials"}
    if oauth.scope:
        form["scope"] = oauth.scope

    def fetch() -> tuple[str, float]:
        try:
            response = session.post(
                oauth.token_url,
                data=form,
                auth=auth,
                timeout=timeout,
                headers={"Accept": "application/json"},
            )
        except requests.RequestException as exc:
            raise _unreachable(exc) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict):
            return _granted(body)
        raise _refused(response.status_code, body if isinstance(body, dict) else {})

    return fetch


def _m365(oauth: OAuth2, timeout: float) -> Fetch:
    """msal's client-credentials flow against the tenant's authority."""
    import msal

    credential: str | dict[str, str] = oauth.client_secret
    if oauth.cert_file:
        credential = _certificate(Path(oauth.cert_file).read_text(), oauth.cert_thumbprint)
    apps: list[Any] = []

    def fetch() -> tuple[str, float]:
        try:
            if not apps:
                # Built on first use: the constructor already asks the authority for its
                # endpoints. Instance discovery is off: the authority is the one configured.
                apps.append(
                    msal.ConfidentialClientApplication(
                        oauth.client_id,
                        client_credential=credential,
                        authority=oauth.token_url,
                        instance_discovery=False,
                        timeout=timeout,
                        token_cache=msal.TokenCache(),
                    )
                )
            app = apps[0]
            # This module decides when a token is renewed: msal's own cache must not hand the
            # refused or the expiring one back.
            cache = app.token_cache
            for item in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
                cache.remove_at(item)
            result = app.acquire_token_for_client(scopes=[oauth.scope])
        except requests.RequestException as exc:
            raise _unreachable(exc) from None
        except ValueError as exc:
            # msal's discovery found no such authority or tenant (a 4xx), or its answer was
            # not one an authority gives: the configuration is at fault, not the moment.
            raise PermanentDelivery(
                f"OAuth2 authority {oauth.token_url} refused: {_short(exc)}"
            ) from None
        if "access_token" in result:
            return _granted(result)
        raise _refused(int(result.get("status_code") or 400), result)

    return fetch


def _certificate(pem: str, thumbprint: str) -> dict[str, str]:
    """msal's certificate credential from one PEM file holding the private key and the
    certificate: msal signs its assertion with the key and names the certificate by its SHA-256
    thumbprint, or by the SHA-1 ``thumbprint`` when one is given (as older setups do)."""
    key = PEM_KEY.search(pem)
    if key is None:
        raise ValueError("the certificate file holds no private key (PEM)")
    credential = {"private_key": key.group(0)}
    certificate = PEM_CERTIFICATE.search(pem)
    if thumbprint:
        credential["thumbprint"] = thumbprint
    elif certificate is not None:
        credential["public_certificate"] = certificate.group(0)
    else:
        raise ValueError("the certificate file holds no certificate, and no cert_thumbprint")
    return credential


def _google(oauth: OAuth2, timeout: float) -> Fetch:
    """A service account's token for the mailbox it acts as (domain-wide delegation)."""
    import google.auth.exceptions
    import google.auth.transport.requests
    from google.oauth2 import service_account

    info = json.loads(Path(oauth.key_file).read_text())
    credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
        info, scopes=[oauth.scope], subject=oauth.mailbox
    )
    session = requests.Session()

    class _Request(google.auth.transport.requests.Request):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            kwargs["timeout"] = timeout  # google-auth's default is two minutes
            return super().__call__(*args, **kwargs)  # type: ignore[no-untyped-call]

    def fetch() -> tuple[str, float]:
        try:
            credentials.refresh(_Request(session))
        except google.auth.exceptions.TransportError as exc:
            raise _unreachable(exc) from None
        except google.auth.exceptions.RefreshError as exc:
            data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
            if getattr(exc, "retryable", False) or not data:
                raise TransientDelivery(f"OAuth2 token endpoint failed: {_short(exc)}") from None
            raise _refused(400, data) from None
        expiry = credentials.expiry  # naive, in UTC
        if expiry is None:
            return str(credentials.token), DEFAULT_LIFETIME
        return str(credentials.token), expiry.replace(tzinfo=UTC).timestamp() - time.time()

    return fetch


def _granted(body: dict[str, Any]) -> tuple[str, float]:
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise TransientDelivery("OAuth2 token endpoint answered without an access token")
    try:
        lifetime = float(body.get("expires_in") or DEFAULT_LIFETIME)
    except (TypeError, ValueError):
        lifetime = DEFAULT_LIFETIME
    return token, lifetime


def _refused(status: int, body: dict[str, Any]) -> DeliveryError:
    """An error answer of a token endpoint: the client's fault is final, the rest is not."""
    error = str(body.get("error") or "")
    detail = _short(body.get("error_description") or "")
    named = f"{error}: {detail}" if detail else error
    if status == 429 or status >= 500 or error in ("temporarily_unavailable", "server_error"):
        return TransientDelivery(f"OAuth2 token endpoint failed (HTTP {status}): {named}")
    if not error:
        return TransientDelivery(f"OAuth2 token endpoint answered HTTP {status} without an error")
    return PermanentDelivery(f"OAuth2 client rejected by the token endpoint ({named})")


def _unreachable(exc: Exception) -> TransientDelivery:
    kind = "timed out" if isinstance(exc, requests.Timeout) else type(exc).__name__
    return TransientDelivery(f"OAuth2 token endpoint unreachable: {kind}")


def _short(text: object) -> str:
    """An error text on one line, cut to a readable length."""
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_DETAIL else line[: MAX_DETAIL - 1] + "…"
