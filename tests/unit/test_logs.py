"""Every process logs JSON lines with the same fields; ids come from context; no exception messages."""

from __future__ import annotations

import io
import json
import logging

from config import load_settings
from tasks import logs

FIELDS = {"ts", "level", "logger", "message", "process", "pid", "request_id", "task_id"}


def capture(name: str = "clinic_relay.test") -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_is_json_with_every_field_and_the_extras() -> None:
    logger, stream = capture()
    logs.set_process_name("worker")
    logger.warning("sync retrying", extra={"date": "2026-11-26", "code": "TEBRA_UPSTREAM"})
    (line,) = lines(stream)
    assert line.keys() >= FIELDS
    assert line["level"] == "WARNING"
    assert line["logger"] == "clinic_relay.test"
    assert line["message"] == "sync retrying"
    assert line["process"] == "worker"
    assert line["date"] == "2026-11-26" and line["code"] == "TEBRA_UPSTREAM"
    assert str(line["ts"]).endswith("+00:00")


def test_request_and_task_ids_come_from_the_context() -> None:
    logger, stream = capture()
    request_token = logs.request_id_var.set("req-123")
    task_token = logs.task_id_var.set("01JTASK")
    try:
        logger.info("inside")
    finally:
        logs.request_id_var.reset(request_token)
        logs.task_id_var.reset(task_token)
    logger.info("outside")
    inside, outside = lines(stream)
    assert (inside["request_id"], inside["task_id"]) == ("req-123", "01JTASK")
    assert (outside["request_id"], outside["task_id"]) == (None, None)


def test_an_exception_is_logged_by_type_and_frames_never_its_message() -> None:
    logger, stream = capture()
    patient = {"name": "Jane Doe", "dob": "1970-01-01"}
    try:
        raise ValueError(f"Patient {patient['name']}, DOB {patient['dob']}")
    except ValueError:
        logger.exception("mapping failed")
    (line,) = lines(stream)
    assert line["exc_type"] == "ValueError"
    assert "test_an_exception_is_logged" in str(line["stack"])
    assert "Jane Doe" not in json.dumps(line) and "1970-01-01" not in json.dumps(line)


def test_a_caller_request_id_is_kept_only_when_it_looks_like_an_id() -> None:
    assert logs.accept_request_id("abc-123_DEF.4:5") == "abc-123_DEF.4:5"
    for bad in (None, "", "x" * 65, "has space", 'quote"', "line\nbreak"):
        generated = logs.accept_request_id(bad)
        assert generated != bad and len(generated) == 32


def test_configure_logging_adds_one_handler_and_keeps_others() -> None:
    root = logging.getLogger()
    saved = list(root.handlers)
    # Another test may have built an app already (its handler is ours, and replaced): keep only others'.
    others = [h for h in saved if not isinstance(h.formatter, logs.JsonFormatter)]
    level = root.level
    try:
        logs.configure_logging(load_settings({"APP_ENV": "test", "LOG_LEVEL": "WARNING"}), "api")
        logs.configure_logging(load_settings({"APP_ENV": "test", "LOG_LEVEL": "WARNING"}), "api")
        ours = [h for h in root.handlers if isinstance(h.formatter, logs.JsonFormatter)]
        assert len(ours) == 1
        assert all(h in root.handlers for h in others)
        assert root.level == logging.WARNING
    finally:
        root.handlers = saved
        root.setLevel(level)
