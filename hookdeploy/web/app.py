"""The Flask application: forge webhooks, /healthz, the API, the dashboard and /metrics, sharing
one config and one store (web.http.Services).
"""

from __future__ import annotations

from flask import Flask, Response, request

from hookdeploy.core.config import Config
from hookdeploy.core.reload import LiveConfig
from hookdeploy.core.store import Store
from hookdeploy.web.api import api, authenticate
from hookdeploy.web.dashboard import dashboard
from hookdeploy.web.http import Services, answer, error_reply
from hookdeploy.web.metrics import install_metrics
from hookdeploy.web.receiver import hooks

# On every answer: nothing a proxy or browser keeps (job logs, app names), and no type guessed from content.
ANSWER_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def create_app(config: Config | LiveConfig, store: Store) -> Flask:
    """The application; every error outside the dashboard is answered as one line of JSON."""
    live = config if isinstance(config, LiveConfig) else LiveConfig(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = live.current.server.max_body  # [server] stays as started (reload.py)
    app.extensions["hookdeploy"] = Services(live, store)
    app.register_blueprint(hooks)
    app.register_blueprint(api)
    app.register_blueprint(dashboard)
    install_metrics(app)  # GET /metrics

    @app.before_request
    def unrouted_api_paths_need_a_token() -> None:
        # A path under /api that no route takes (a 404 or 405) asks for a token first, as every route
        # there does: without one, nobody learns which paths the API has.
        if request.blueprint != "api" and (request.path == "/api" or request.path.startswith("/api/")):
            authenticate()

    @app.after_request
    def answer_headers(response: Response) -> Response:
        for name, value in ANSWER_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.errorhandler(Exception)
    def error(error: Exception) -> Response:
        return error_reply(*answer(error))

    return app
