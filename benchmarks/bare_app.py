"""The baseline: a Flask app that only parses the JSON body and answers ``{"cards": []}``.

It runs under exactly the gunicorn settings of ``baclofen-cds serve``
(``cds_hooks.gunicorn_conf.options``), so the ratio of our throughput to its throughput
isolates what our service does per request beyond HTTP, WSGI and JSON parsing.
"""

from __future__ import annotations

import argparse

from flask import Flask, Response, jsonify, request


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/cds-services/<service_id>")
    def hook(service_id: str) -> Response:
        request.get_json()
        return jsonify({"cards": []})

    return app


def main() -> None:
    from cds_hooks import gunicorn_conf

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    args = parser.parse_args()
    gunicorn_conf.run(create_app, args.host, args.port, args.workers)


if __name__ == "__main__":
    main()
