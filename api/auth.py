"""Who is calling: Username/Password parameters, or HTTP Basic when those are absent."""

from __future__ import annotations

from flask import Request

from mailgate.errors import AuthRequired
from mailgate.users import Account, UserStore


def authenticate(request: Request, params: dict[str, str], users: UserStore) -> Account:
    """The caller's account; 304 without credentials, 305 with wrong ones."""
    name = params.get("username", "")
    password = params.get("password", "")
    if not name and not password and request.authorization is not None:
        auth = request.authorization
        if auth.type == "basic":
            name, password = auth.username or "", auth.password or ""
    if not name or not password:
        raise AuthRequired()
    return users.authenticate(name, password)
