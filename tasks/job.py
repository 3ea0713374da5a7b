"""What every Celery task shell is made of: its settings, its attempt, and the one step that turns a plain
function's :class:`Outcome` into Celery's terms (a result, a retry, a deferral or a failure).

A shell unpacks primitives, runs one plain function under the one retry policy (:func:`outcome_of`,
tasks/retry.py) and returns :func:`conclude` of it. Where giving up is not a task failure (a patient shown
without details, a refresh an operator holds off), the job module says what the job answers instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Task

from config import Settings, load_settings
from tasks import retry
from tasks.retry import DEFER, RETRY, Limits, Verdict


@dataclass(frozen=True)
class Outcome:
    """A plain function's answer: its ``result``, or the policy's ``verdict`` on ``error``."""

    result: Any = None
    verdict: Verdict | None = None
    error: BaseException | None = None


def outcome_of(work: Callable[[], Any], *, attempt: int, deferrals: int, limits: Limits) -> Outcome:
    """Run ``work`` (a plain function, its arguments bound): its result, or the retry policy's verdict on the
    Tebra failure it raised (anything else goes up as it is)."""
    try:
        return Outcome(work())
    except retry.FAILURES as exc:
        verdict = retry.decide(exc, attempt=attempt, deferrals=deferrals, limits=limits)
        if verdict is None:
            raise
        return Outcome(verdict=verdict, error=exc)


def task_settings(task: Task) -> Settings:
    """The settings the Celery app was built with (a bare app falls back to the environment)."""
    settings = getattr(task.app.conf, "clinic_settings", None)
    return settings if isinstance(settings, Settings) else load_settings()


def attempt_of(task: Task, deferrals: int) -> int:
    """The attempts spent so far: Celery's retries less the deferrals (which spend none)."""
    return max(0, int(task.request.retries) - deferrals)


def conclude(task: Task, outcome: Outcome, deferrals: int) -> Any:
    """The result, or: a retry after the verdict's countdown; a deferral (the same, counted in the
    ``deferrals`` argument); a failure (the error raised, so Flower and the metrics see it fail)."""
    verdict = outcome.verdict
    if verdict is None:
        return outcome.result
    if verdict.action == DEFER:
        raise task.retry(
            exc=verdict.refusal or outcome.error,
            countdown=verdict.countdown,
            kwargs={"deferrals": deferrals + 1},
        )
    if verdict.action == RETRY:
        raise task.retry(exc=outcome.error, countdown=verdict.countdown)
    raise outcome.error or RuntimeError(f"{verdict.code}: failed")
