"""Placeholder: the feedback store (replaced by the SQLAlchemy work)."""

from __future__ import annotations

from flask import Flask

from cds_hooks.config import Settings


class Store:
    def ping(self) -> bool:
        return True


def init_store(app: Flask, settings: Settings) -> Store:
    store = Store()
    app.extensions["baclofen_store"] = store
    del settings
    return store
