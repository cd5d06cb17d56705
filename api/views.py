"""Routes: the Ozeki ``/api`` dispatcher and the health probes."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, request
from redis.exceptions import RedisError

from api import xml
from api.auth import authenticate, client_address
from api.commands import COMMANDS, LABELS
from api.metrics import ACCEPT_SECONDS, REQUESTS, UNKNOWN_PARAMETERS
from api.params import read_params, unknown_params, unknown_warning
from api.services import services
from api.uploads import multipart_fields
from mailgate.errors import ApiError, InvalidParameter, ParseError, Unavailable, UnknownCommand

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__)


ACTING_METHODS = frozenset({"GET", "POST"})

# Every method reaches the view (no automatic HEAD/OPTIONS answers from Flask), so whatever a
# client sends to /api is answered in XML; only GET and POST act.
_ANY_METHOD = ["GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"]


# "/" is where Ozeki Phone System XE clients call.
@bp.route("/", methods=_ANY_METHOD, provide_automatic_options=False)
@bp.route("/api", methods=_ANY_METHOD, provide_automatic_options=False)
@bp.route("/api/", methods=_ANY_METHOD, provide_automatic_options=False)
def api() -> Response:
    """Parse, pick the command, authenticate, run it; every outcome is an XML document."""
    started = time.perf_counter()
    label = "other"
    try:
        if request.method not in ACTING_METHODS:
            # HEAD would act and drop the EmailId with the body; the rest mean nothing here.
            raise ParseError(f"method {request.method} not allowed: use GET or POST")
        svc = services()
        params = read_params(
            request, svc.settings.max_request_bytes, svc.settings.legacy_charset, multipart_fields
        )
        command = params.get("command", "")
        if not command:
            raise InvalidParameter("command", "the command is required")
        handler = COMMANDS.get(command.lower())
        if handler is None:
            raise UnknownCommand(xml.echo(command))
        label = LABELS[command.lower()]
        address = client_address(request, svc.settings.trusted_proxies)
        account = authenticate(request, params, svc.users, svc.limits, address)
        unknown = unknown_params(params)
        if unknown:
            UNKNOWN_PARAMETERS.labels(label).inc(len(unknown))
            if svc.settings.strict_parameters:
                reason = "unknown parameter (MAILGATE_STRICT_PARAMETERS is on)"
                raise InvalidParameter(xml.echo(unknown[0]), reason, label)
        fields = handler(params, account, svc)
        if unknown:
            fields.append(("Warning", unknown_warning(unknown)))
        code, response = 200, xml.success(fields)
    except ApiError as exc:
        code, response = exc.code, xml.error(exc)
    except RedisError:
        code, response = 503, xml.error(Unavailable("Redis is unavailable"))
    except Exception:
        # Never a 5xx page: log the fault (no locals, so no password) and answer in XML.
        log.exception("unexpected error in /api")
        code, response = 503, xml.error(Unavailable("internal error"))
    REQUESTS.labels(label, str(code)).inc()
    if label == "SendEmail":
        ACCEPT_SECONDS.observe(time.perf_counter() - started)
    return response


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
