"""Celery task shell for patient details: one GetPatient lookup per patient and day, on the ``details`` queue.

Arguments are the date and the hpid only (Flower and the broker show them); the worker finds Tebra's id in
the day's flow entry. The one retry policy (tasks/retry.py) with a lookup's limits: throttling is pacing and
is retried; an outage is retried with backoff a few times; an open breaker or refused credentials are waited
with for about an hour; then, or for a patient Tebra will not give us (not found, a business error), the
patient is marked ``details=incomplete`` and stays on the board (asked for again hourly).
"""

from __future__ import annotations

from functools import partial

from celery import Task, shared_task

from config import Settings
from tasks import names
from tasks.job import Outcome, attempt_of, conclude, outcome_of, task_settings
from tasks.patients.details import DetailsContext, fetch_details, mark_incomplete, release
from tasks.retry import FAIL, Limits
from tasks.runtime import Runtime, get_runtime

DETAILS_MAX_RETRIES = 3  # details are a nicety: after this many outage retries the patient shows incomplete
DETAILS_MAX_DEFERRALS = 60  # an open breaker: wait with it (about an hour at 60 s), then show incomplete


def details_limits(settings: Settings) -> Limits:
    """A lookup's limits. While credentials are refused it waits a breaker period, not the latch's few
    seconds: an operator has to act, and a day's lookups need not ask the latch that often."""
    return Limits(
        DETAILS_MAX_RETRIES,
        settings.breaker_open_s,
        settings.retry_backoff_max_s,
        max_deferrals=DETAILS_MAX_DEFERRALS,
        refused_wait_s=settings.breaker_open_s,
        defer_jitter_s=(0.5, 5.0),  # spread the day's lookups, not one stampede
    )


def details_context(runtime: Runtime) -> DetailsContext:
    """The collaborators of a lookup, from this process's runtime."""
    return DetailsContext(
        redis=runtime.redis,
        cipher=runtime.cipher,
        publisher=runtime.publisher,
        source=runtime.gateway,
        cache_ttl_s=runtime.settings.retention_days * 86400,
    )


def lookup(
    ctx: DetailsContext, date: str, hpid: str, *, attempt: int, deferrals: int, limits: Limits
) -> Outcome:
    """One lookup under the policy: a retry or a deferral keeps it claimed; done, or given up (the patient
    marked incomplete: the board shows them, asked for again hourly), it is over and a later sync may queue it
    again."""
    outcome = outcome_of(
        partial(fetch_details, ctx, date, hpid), attempt=attempt, deferrals=deferrals, limits=limits
    )
    verdict = outcome.verdict
    if verdict is not None and verdict.action != FAIL:
        return outcome
    state = outcome.result if verdict is None else mark_incomplete(ctx, date, hpid, verdict.code)
    release(ctx.redis, date, hpid)
    return Outcome({"date": date, "hpid": hpid, "details": state})


@shared_task(
    name=names.FETCH_DETAILS,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # the retry policy decides, per failure class
)
def fetch_patient_details(self: Task, date: str, hpid: str, deferrals: int = 0) -> dict[str, str]:
    """Fetch one patient's date of birth for ``date`` and announce ``patient_details_updated``.

    ``deferrals`` counts the times an open breaker sent it back; like the sync's, they use no retry budget.
    """
    settings = task_settings(self)
    ctx = details_context(get_runtime(settings))
    outcome = lookup(ctx, date, hpid, attempt=attempt_of(self, deferrals), deferrals=deferrals,
                     limits=details_limits(settings))  # fmt: skip
    result: dict[str, str] = conclude(self, outcome, deferrals)
    return result
