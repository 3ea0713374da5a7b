"""Placeholder until the relay lands: /ws is registered by app/relay.py."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    return None
