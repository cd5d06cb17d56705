"""The Flask API: the Ozeki-compatible ``/api`` endpoint and health probes."""

from __future__ import annotations

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from mailgate.config import Settings
from mailgate.errors import ParseError
from mailgate.logs import configure_logging


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app; tests pass their own settings, servers read the environment."""
    from api import metrics, views, xml
    from api.rest import rest_bp
    from api.rest_errors import error_response
    from api.services import Services

    configure_logging()
    app = Flask(__name__)
    app.extensions["mailgate"] = Services.build(settings or Settings.from_env())
    app.register_blueprint(views.bp)
    app.register_blueprint(rest_bp)
    app.register_blueprint(metrics.bp)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response | HTTPException:
        # Werkzeug's routing refusals (no rule, wrong method) in each API's own format.
        path = request.path
        if path == "/api/v1" or path.startswith("/api/v1/"):
            return error_response(exc)
        if path in ("/api", "/api/"):
            return xml.error(ParseError(exc.name))
        return exc

    return app
