"""The Flask application: forge webhooks, /healthz, the API, the dashboard and /metrics, sharing
one config and one store (web.http.Services).
"""

from __future__ import annotations

from flask import Flask, Response

from hookdeploy.core.config import Config
from hookdeploy.core.store import Store
from hookdeploy.web.api import api
from hookdeploy.web.dashboard import dashboard
from hookdeploy.web.http import Services, answer, error_reply
from hookdeploy.web.metrics import install_metrics
from hookdeploy.web.receiver import hooks


def create_app(config: Config, store: Store) -> Flask:
    """The application; every error outside the dashboard is answered as one line of JSON."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body
    app.extensions["hookdeploy"] = Services(config, store)
    app.register_blueprint(hooks)
    app.register_blueprint(api)
    app.register_blueprint(dashboard)
    install_metrics(app)  # GET /metrics

    @app.errorhandler(Exception)
    def error(error: Exception) -> Response:
        return error_reply(*answer(error))

    return app
