"""The Flask application factory (flaskr style): configuration, blueprints, extensions."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask

from cds_hooks import api, feedback_api, health, metrics
from cds_hooks.auth import init_auth
from cds_hooks.config import DefaultConfig, Settings
from cds_hooks.console import init_console
from cds_hooks.cors import init_cors
from cds_hooks.errors import register_error_handlers
from cds_hooks.forwarded import FromTrustedProxies
from cds_hooks.http_json import OrjsonProvider
from cds_hooks.knowledge import load_knowledge
from cds_hooks.logging import configure_logging, init_request_logging
from cds_hooks.snooze import Recall
from cds_hooks.store import init_store


def create_app(config: object | Mapping[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then ``CDS_*`` environment variables, then ``config``.

    ``config`` (an object or a mapping) wins over the environment so tests and the CLI can
    pin settings. Invalid settings raise ``ConfigError`` here, before serving.
    """
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_object(DefaultConfig)
    app.config.from_prefixed_env(prefix="CDS")
    if isinstance(config, Mapping):
        app.config.from_mapping(config)
    elif config is not None:
        app.config.from_object(config)

    settings = Settings.from_mapping(app.config, app.instance_path)
    configure_logging(settings.log_level, log_format=settings.log_format)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = OrjsonProvider(app)
    os.makedirs(app.instance_path, exist_ok=True)

    ready_checks: dict[str, Callable[[], bool]] = {"configuration": lambda: True}
    degraded_checks: dict[str, Callable[[], bool]] = {}
    app.extensions["baclofen_settings"] = settings
    app.extensions["baclofen_knowledge"] = load_knowledge(settings.policy_file)
    app.extensions[health.READY_CHECKS] = ready_checks
    app.extensions[health.DEGRADED_CHECKS] = degraded_checks

    init_cors(app, settings)
    register_error_handlers(app)
    init_request_logging(app)
    metrics.init_app(app)
    store = init_store(app, settings)
    app.extensions["baclofen_recall"] = Recall(
        store, settings.pseudonym_keys, app.extensions["baclofen_knowledge"].version
    )
    degraded_checks["store"] = store.ping
    init_auth(app, settings)

    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(feedback_api.bp)
    init_console(app, settings)
    if settings.trusted_proxies:
        app.wsgi_app = FromTrustedProxies(app.wsgi_app, settings.trusted_proxies)  # type: ignore[method-assign]
    return app
