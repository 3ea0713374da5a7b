"""The API's JSON goes through orjson and reads the same as Flask's default provider's."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from flask import Flask

from app.json_provider import OrjsonProvider


def _app() -> Flask:
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    return app


def test_answers_decode_to_what_the_default_provider_gives() -> None:
    value = {"b": 1, "a": [1.5, None, True], "name": "Zoë", "day": date(2026, 3, 2)}
    value["at"] = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    plain = Flask("plain")
    with _app().app_context() as ours, plain.app_context():
        mine = ours.app.json.response(value)
        theirs = plain.json.response(value)
    assert mine.mimetype == "application/json" and mine.get_data().endswith(b"\n")
    assert json.loads(mine.get_data()) == json.loads(theirs.get_data())  # dates as HTTP dates, like Flask
    assert "Zoë".encode() in mine.get_data()  # UTF-8, not \\u escapes
    assert list(json.loads(mine.get_data())) == ["b", "a", "name", "day", "at"]  # insertion order kept


def test_bodies_parse() -> None:
    assert OrjsonProvider(_app()).loads('{"status": "roomed"}') == {"status": "roomed"}


# Flask turns a ValueError from loads into 400; a lone surrogate could never be stored as UTF-8 anyway.
@pytest.mark.parametrize("bad", ["{", b"\xff\xfe", '"\\ud800"'])
def test_bad_bodies_raise_value_error(bad: str | bytes) -> None:
    with pytest.raises(ValueError):
        OrjsonProvider(_app()).loads(bad)
