"""JSON log lines, one formatter for every process (api, worker, beat, audit), with request and task ids.

Each line is one JSON object: ``ts``, ``level``, ``logger``, ``message``, ``process`` (which of the system's
processes wrote it), ``pid``, ``request_id``, ``task_id``, and whatever ``extra=`` fields the call passed
(``date``, ``code``, …). The ids come from context variables: the API sets the request id per request
(app/request_log.py), the worker sets both per task (tasks/correlation.py), so a line logged anywhere below
a view or a task carries them without being passed down.

No PHI: callers log dates, ids, counts and codes only. An exception is logged as its type and its stack
frames, never its message (a SOAP fault or a driver error may quote a patient's record).
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
import sys
import traceback
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from config import Settings

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
task_id_var: ContextVar[str | None] = ContextVar("task_id", default=None)

# A caller's X-Request-ID is kept only if it looks like an id: it lands in every log line and a header.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# The attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

_process_name = "python"
_OURS = "_clinic_relay_json"


def new_request_id() -> str:
    """A fresh request id (32 hex characters)."""
    return uuid.uuid4().hex


def accept_request_id(value: str | None) -> str:
    """The caller's request id when it is a plausible id, else a new one."""
    if value and _REQUEST_ID_RE.match(value):
        return value
    return new_request_id()


def set_process_name(name: str) -> None:
    """Name this process in every line (``api``, ``worker``, ``beat``, ``audit``)."""
    global _process_name
    _process_name = name


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": _process_name,
            "pid": record.process,
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
            "task_id": getattr(record, "task_id", None) or task_id_var.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key not in line:
                line[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, _, tb = record.exc_info
            line["exc_type"] = exc_type.__name__
            line["stack"] = "".join(traceback.format_tb(tb))
        return json.dumps(line, default=str, ensure_ascii=False)


# Libraries that log whole HTTP bodies below WARNING: zeep writes every SOAP envelope at DEBUG (Tebra's
# password and customer key travel in each request header, names and dates of birth in the replies) and
# urllib3 its request lines. Whatever LOG_LEVEL says, they speak at WARNING and above only.
BODY_LOGGERS = ("zeep", "urllib3")


def logging_dict(settings: Settings) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of every process: JSON lines on stderr at LOG_LEVEL."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": sys.stderr}},
        "root": {"level": settings.log_level.upper(), "handlers": ["stderr"]},
        "loggers": {
            # gunicorn's loggers keep their own handlers unless told; route them through ours.
            "gunicorn.error": {"handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"handlers": [], "propagate": False},  # the app logs access itself
            # One line per request is ours (clinic_relay.access); werkzeug's would repeat it with the query.
            "werkzeug": {"level": "WARNING"},
            **{name: {"level": "WARNING"} for name in BODY_LOGGERS},
        },
    }


def gunicorn_logconfig_dict(settings: Settings) -> dict[str, Any]:
    """For ``logconfig_dict`` in a gunicorn config: the arbiter's lines in the same JSON as the app's."""
    return logging_dict(settings)


class _BodyLoggerFilter(logging.Filter):
    """Drops a record of a body-logging library below WARNING, even if someone lowered its level."""

    def filter(self, record: logging.LogRecord) -> bool:
        quiet = record.name.split(".", 1)[0] in BODY_LOGGERS
        return not quiet or record.levelno >= logging.WARNING


def configure_logging(settings: Settings, process_name: str) -> None:
    """JSON lines on stderr for this process, named ``process_name`` (idempotent).

    Adds one handler to the root logger instead of replacing the configuration: handlers others put there
    (pytest's capture) keep working, and calling it twice does not double the lines.
    """
    set_process_name(process_name)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_BodyLoggerFilter())
    setattr(handler, _OURS, True)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in BODY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # gunicorn's error logger has its own handler and does not propagate: same lines, same format.
    for existing in logging.getLogger("gunicorn.error").handlers:
        existing.setFormatter(JsonFormatter())
    # gunicorn's access line quotes the full request line, query string included (a date of birth, a name
    # one day): the app's own access line (app/request_log.py) names the route template instead.
    logging.getLogger("gunicorn.access").disabled = True
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # our access line replaces its (with query)
