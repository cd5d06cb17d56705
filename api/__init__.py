"""The Flask API: the Ozeki-compatible ``/api`` endpoint and health probes."""

from __future__ import annotations

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from mailgate.config import Settings
from mailgate.errors import ParseError
from mailgate.logs import configure_logging


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app; tests pass their own settings, servers read the environment."""
    from api import metrics, views, xml
    from api.rest import rest_bp
    from api.services import Services

    configure_logging()
    app = Flask(__name__)
    app.extensions["mailgate"] = Services.build(settings or Settings.from_env())
    app.register_blueprint(views.bp)
    app.register_blueprint(rest_bp)
    app.register_blueprint(metrics.bp)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response | HTTPException:
        # Werkzeug's own refusals (405 on /api, say) become Ozeki XML too.
        if exc.code == 404 or not _is_api_path():
            return exc
        return xml.error(ParseError(exc.name))

    return app


def _is_api_path() -> bool:
    from flask import request

    # Only the Ozeki endpoint answers in XML; /api/v1 has its own JSON errors.
    return request.path == "/api"
