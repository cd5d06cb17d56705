"""The Flask API: the Ozeki-compatible endpoint (:mod:`api.ozeki`), the REST API
(:mod:`api.rest`), what both do to an e-mail (:mod:`api.emails`), metrics and health probes."""

from __future__ import annotations

from flask import Flask, Response, request
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from mailgate.config import Settings
from mailgate.errors import ParseError
from mailgate.logs import configure_logging

OZEKI_PATHS = ("/", "/api")
"""Where the Ozeki-compatible endpoint answers (XE clients call the root path)."""


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app; tests pass their own settings, servers read the environment."""
    from api import metrics, ozeki, rest
    from api.services import Services, services
    from api.uploads import discard_unclaimed

    configure_logging(process="web")
    app = Flask(__name__)
    app.extensions["mailgate"] = Services.build(settings or Settings.from_env())
    app.register_blueprint(ozeki.bp)
    app.register_blueprint(rest.rest_bp)
    app.register_blueprint(metrics.bp)
    app.teardown_request(discard_unclaimed)  # no refused request leaves an upload behind

    @app.before_request
    def ozeki_path_in_any_case() -> Response | None:
        # Routing is case-sensitive; Ozeki answers /API and /Api/ as /api.
        if request.url_rule is None and request.path.lower() in ("/api", "/api/"):
            return ozeki.api()
        return None

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response | HTTPException:
        # Werkzeug's routing refusals (no rule, wrong method) in each API's own format.
        path = request.path
        if path == "/api/v1" or path.startswith("/api/v1/"):
            return rest.error_response(exc)
        if path in (*OZEKI_PATHS, "/api/") and exc.code != 404:
            return ozeki.error(ParseError(exc.name))
        if exc.code == 404:
            # Any other path is the Ozeki side's: an XML answer (HTTP 404) naming the path.
            return ozeki.unknown_path(path)
        return exc

    @app.route("/healthz")
    def healthz() -> Response:
        """Alive while the process runs."""
        return Response("ok\n", 200, content_type="text/plain")

    @app.route("/readyz")
    def readyz() -> Response:
        """Ready when Redis answers (a probe, not an API call: plain text, no 503 body)."""
        try:
            services().store.redis.ping()
        except RedisError:
            return Response("redis unavailable\n", 503, content_type="text/plain")
        return Response("ok\n", 200, content_type="text/plain")

    return app
