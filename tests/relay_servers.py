"""Real servers for the relay tests: an OAuth2 token endpoint (HTTPS, with a certificate made
for the test) and an SMTP server that takes ``AUTH XOAUTH2`` with the tokens it issued.

The token endpoint speaks the three dialects the worker uses: Microsoft Entra ID as msal calls
it (OpenID discovery, then a client-credentials POST), Google's JWT bearer grant (the service
account's assertion is checked against its public key), and a plain RFC 6749 client-credentials
POST with HTTP Basic. It issues ``tok-N`` tokens that expire after ``lifetime`` seconds, and the
SMTP server refuses a token that expired, was revoked, or was issued for another mailbox.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import google.auth.jwt
import jwt
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509

from tests.support import ScriptedHandler, free_port

CLIENT_ID, CLIENT_SECRET = "client-7f3a", "s3cret~value/with:odd&chars"
TENANT = "contoso-tenant"


def make_rsa_key(folder: Path, name: str) -> tuple[Path, str]:
    """An RSA private key file and its public key (PEM text)."""
    key = folder / f"{name}.pem"
    subprocess.run(
        [
            "openssl",
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            str(key),
        ],
        check=True,
        capture_output=True,
    )
    public = subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-pubout"], check=True, capture_output=True
    ).stdout.decode()
    return key, public


@dataclass
class Issued:
    mailbox: str
    expires_at: float


@dataclass
class TokenEndpoint:
    """The token endpoint; ``mode`` is ``ok``, ``invalid_client`` or ``broken`` (HTTP 503)."""

    cert: Path
    key: Path
    lifetime: float = 3600.0
    mode: str = "ok"
    google_public_key: str = ""
    mailbox: str = "ivr@contoso.example"
    """Who a client-credentials token (generic, m365) may send as."""
    issued: dict[str, Issued] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    """The path of each token request (discovery not counted)."""
    google_claims: list[dict[str, Any]] = field(default_factory=list)
    client_certificate: str = ""
    """Entra ID: the certificate (PEM) whose key may sign a client assertion."""
    assertions: int = 0
    """Client assertions that passed the check."""
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = self.port or free_port()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                endpoint.get(self)

            def do_POST(self) -> None:
                endpoint.post(self)

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Down: connections are refused until :meth:`start` again (same port)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def fetched(self) -> int:
        with self.lock:
            return len(self.requests)

    def revoke(self) -> None:
        """Every token issued so far stops working (the relay answers 535)."""
        with self.lock:
            self.issued.clear()

    def valid(self, token: str, mailbox: str) -> bool:
        with self.lock:
            grant = self.issued.get(token)
        return grant is not None and grant.mailbox == mailbox and time.time() < grant.expires_at

    def expired(self, token: str) -> bool:
        with self.lock:
            grant = self.issued.get(token)
        return grant is not None and time.time() >= grant.expires_at

    def get(self, request: BaseHTTPRequestHandler) -> None:
        # msal's OpenID discovery of the tenant: where its token endpoint is.
        if request.path == f"/{TENANT}/v2.0/.well-known/openid-configuration":
            base = f"{self.base}/{TENANT}"
            _answer(
                request,
                200,
                {
                    "issuer": f"{base}/v2.0",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                },
            )
            return
        _answer(request, 400, {"error": "invalid_tenant"})

    def post(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        form = {k: v[-1] for k, v in parse_qs(request.rfile.read(length).decode()).items()}
        with self.lock:
            self.requests.append(request.path)
        if self.mode == "broken":
            _answer(request, 503, {"error": "temporarily_unavailable"})
            return
        mailbox = self.mailbox
        if request.path == f"/{TENANT}/oauth2/v2.0/token":  # Entra ID, as msal posts it
            client = (form.get("client_id"), form.get("client_secret"))
            if "client_assertion" in form and self.client_certificate:
                client = (form.get("client_id"), CLIENT_SECRET) if self._signed(form) else client
            good = client == (CLIENT_ID, CLIENT_SECRET) and form.get("scope", "").startswith(
                "https://outlook.office365.com/.default"
            )
        elif request.path == "/google/token":  # the JWT bearer grant of a service account
            # google-auth addresses its assertion to Google's token URI, wherever it posts it.
            claims = google.auth.jwt.decode(
                form["assertion"],
                certs=self.google_public_key,
                audience="https://oauth2.googleapis.com/token",
            )
            self.google_claims.append(claims)
            mailbox, good = claims["sub"], claims["scope"] == "https://mail.google.com/"
        else:  # RFC 6749 client credentials, the client by HTTP Basic
            basic = request.headers.get("Authorization", "").removeprefix("Basic ")
            user, _, secret = base64.b64decode(basic).decode().partition(":")
            good = (unquote(user), unquote(secret)) == (CLIENT_ID, CLIENT_SECRET)
            good = good and form.get("grant_type") == "client_credentials"
        if self.mode == "invalid_client" or not good:
            _answer(
                request,
                401,
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                },
            )
            return
        with self.lock:
            token = f"tok-{len(self.requests)}-{time.monotonic_ns()}"
            self.issued[token] = Issued(mailbox, time.time() + self.lifetime)
        _answer(
            request,
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.lifetime,
            },
        )

    def _signed(self, form: dict[str, str]) -> bool:
        """A client assertion signed by the certificate's key, for this endpoint."""
        public = x509.load_pem_x509_certificate(self.client_certificate.encode()).public_key()
        try:
            jwt.decode(
                form["client_assertion"],
                public,
                algorithms=["PS256", "RS256"],
                audience=f"{self.base}/{TENANT}/oauth2/v2.0/token",
                issuer=CLIENT_ID,
            )
        except jwt.InvalidTokenError:
            return False
        self.assertions += 1
        return True


def _answer(request: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    request.send_response(status)
    request.send_header("Content-Type", "application/json")
    request.send_header("Content-Length", str(len(data)))
    request.end_headers()
    request.wfile.write(data)


class XOAuth2Handler(ScriptedHandler):
    """A :class:`ScriptedHandler` whose server takes ``AUTH XOAUTH2`` with the endpoint's
    tokens only, and refuses mail from a session that did not log in."""

    def __init__(self, endpoint: TokenEndpoint) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.refused: list[str] = []
        """Each token the server refused."""

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        blob = base64.b64decode(args[1]) if len(args) > 1 else await server.challenge_auth("")
        parts = dict(p.split("=", 1) for p in blob.decode().split("\x01") if "=" in p)
        token = parts.get("auth", "").removeprefix("Bearer ")
        if self.endpoint.valid(token, parts.get("user", "")):
            return AuthResult(success=True, auth_data=parts.get("user"))
        self.refused.append(token)
        # As Google and Microsoft do: the error as a challenge, then 535 after the empty line.
        await server.challenge_auth(json.dumps({"status": "401", "schemes": "bearer"}))
        return AuthResult(
            success=False, handled=False, message="535 5.7.8 Username and Password not accepted"
        )

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        return "250 OK"


class XOAuth2Server:
    """An aiosmtpd server on a free port taking XOAUTH2 over plain SMTP (the test's loopback);
    :meth:`restart` ends every session, as a relay's restart does."""

    def __init__(self, endpoint: TokenEndpoint) -> None:
        self.handler = XOAuth2Handler(endpoint)
        self.port = free_port()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            decode_data=False,
            auth_require_tls=False,
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def xoauth2_smtp(endpoint: TokenEndpoint) -> Iterator[XOAuth2Server]:
    """A running :class:`XOAuth2Server`, stopped afterwards."""
    server = XOAuth2Server(endpoint)
    server.start()
    try:
        yield server
    finally:
        server.stop()
