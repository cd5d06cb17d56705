"""Routes: the Ozeki ``/api`` dispatcher and the health probes."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, request
from redis.exceptions import RedisError

from api import xml
from api.auth import authenticate, client_address
from api.commands import COMMANDS
from api.params import read_params
from api.services import services
from mailgate.errors import ApiError, InvalidParameter, Unavailable, UnknownCommand

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__)


@bp.route("/api", methods=["GET", "POST"])
def api() -> Response:
    """Parse, pick the command, authenticate, run it; every outcome is an XML document."""
    svc = services()
    try:
        params = read_params(request, svc.settings.max_request_bytes)
        command = params.get("command", "")
        if not command:
            raise InvalidParameter("command", "the command is required")
        handler = COMMANDS.get(command.lower())
        if handler is None:
            raise UnknownCommand(xml.echo(command))
        address = client_address(request, svc.settings.trusted_proxies)
        account = authenticate(request, params, svc.users, svc.limits, address)
        return xml.success(handler(params, account, svc))
    except ApiError as exc:
        return xml.error(exc)
    except RedisError:
        return xml.error(Unavailable("Redis is unavailable"))
    except Exception:
        # Never a 5xx page: log the fault (no locals, so no password) and answer in XML.
        log.exception("unexpected error in /api")
        return xml.error(Unavailable("internal error"))


@bp.route("/healthz")
def healthz() -> Response:
    """Alive while the process runs."""
    return Response("ok\n", 200, content_type="text/plain")


@bp.route("/readyz")
def readyz() -> Response:
    """Ready when Redis answers."""
    try:
        services().store.redis.ping()
    except RedisError:
        return Response("redis unavailable\n", 503, content_type="text/plain")
    return Response("ok\n", 200, content_type="text/plain")
