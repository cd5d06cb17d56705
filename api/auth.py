"""Who is calling, and from where.

Credentials: Username/Password parameters, or HTTP Basic when those are absent. Recently
verified credentials pass without argon2 work or throttling; any argon2 check first reserves its
slot in the failed-login throttle (api.ratelimit), so guessing costs the guesser, not our CPU,
and a known client is not locked out by someone else's guessing. The account's network
list is checked after authentication, so it cannot be probed without a password.
"""

from __future__ import annotations

import ipaddress

from flask import Request

from api.ratelimit import Limits
from mailgate.errors import AddressForbidden, AuthFailed, AuthRequired
from mailgate.users import Account, UserStore, parsed_networks, plausible


def client_address(request: Request, trusted: tuple[str, ...]) -> str:
    """The caller's address: the peer, or the X-Forwarded-For hop a trusted proxy saw."""
    peer = request.remote_addr or ""
    if not trusted:
        return peer
    networks = parsed_networks(trusted)

    def is_trusted(address: str) -> bool:
        try:
            return any(ipaddress.ip_address(address) in net for net in networks)
        except ValueError:
            return False

    if not is_trusted(peer):
        return peer
    hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",")]
    # Walk back from the nearest hop; the first one not ours is the client.
    for hop in reversed([h for h in hops if h]):
        if not is_trusted(hop):
            return hop
    return peer


def authenticate(
    request: Request, params: dict[str, str], users: UserStore, limits: Limits, address: str
) -> Account:
    """The caller's account; 304 without credentials, 305 wrong, 429 throttled, 307 network."""
    name = params.get("username", "")
    password = params.get("password", "")
    if not name and not password and request.authorization is not None:
        auth = request.authorization
        if auth.type == "basic":
            name, password = auth.username or "", auth.password or ""
    if not name or not password:
        raise AuthRequired()
    if not plausible(name, password):
        raise AuthFailed()  # before any Redis key or argon2 work is spent on it
    account = users.cached(name, password)
    if account is None:
        account = users.verify(name, password, lambda: limits.login_attempt(address, name))
    if not account.allows_address(address):
        raise AddressForbidden(f"{account.name} may not call from {address}")
    return account
