"""Celery task shell for patient details: one GetPatient lookup per patient and day, on the ``details`` queue.

Arguments are the date and the hpid only (Flower and the broker show them); the worker finds Tebra's id in
the day's flow entry. Throttling is pacing and is retried; an outage is retried with backoff a few times; a
patient Tebra will not give us (not found, a business or security error, retries exhausted) is marked
``details=incomplete`` and stays on the board.
"""

from __future__ import annotations

import logging
import random

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded

from tasks import patient_details
from tasks.breaker.errors import BreakerOpen
from tasks.patient_details import DETAILS_TASK, DetailsContext
from tasks.runtime import Runtime, get_runtime
from tasks.schedule import THROTTLE_RETRY_LIMIT, backoff_s, task_settings
from tasks.tebra.credentials import REFUSED_CODE, CredentialsRefused
from tasks.tebra.errors import TebraError, TebraSecurityError, TebraThrottled, TebraUpstreamError

log = logging.getLogger(__name__)

DETAILS_MAX_RETRIES = 3  # details are a nicety: after this many outage retries the patient shows incomplete
DETAILS_MAX_DEFERRALS = 60  # an open breaker: wait with it (about an hour at 60 s), then show incomplete


def details_context(runtime: Runtime) -> DetailsContext:
    """The collaborators of a lookup, from this process's runtime."""
    return DetailsContext(
        redis=runtime.redis,
        store=runtime.store,
        cipher=runtime.cipher,
        publisher=runtime.publisher,
        source=runtime.gateway,
        cache_ttl_s=runtime.settings.retention_days * 86400,
    )


@shared_task(
    name=DETAILS_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # the policy below decides, per failure class
)
def fetch_patient_details(self: Task, date: str, hpid: str, deferrals: int = 0) -> dict[str, str]:
    """Fetch one patient's date of birth for ``date`` and announce ``patient_details_updated``.

    ``deferrals`` counts the times an open breaker sent it back; like the sync's, they use no retry budget.
    """
    settings = task_settings(self)
    ctx = details_context(get_runtime(settings))
    attempt = max(0, int(self.request.retries) - deferrals)
    try:
        outcome = patient_details.fetch_details(ctx, date, hpid)
    except (BreakerOpen, TebraSecurityError) as exc:
        # An open breaker, or refused credentials (the latch holds every call until an operator resumes):
        # wait with them, then show the patient incomplete (details are asked for again hourly).
        if deferrals < DETAILS_MAX_DEFERRALS:
            wait = _deferral_s(exc, settings.breaker_open_s)
            countdown = wait + random.uniform(0.5, 5.0)  # spread the day's lookups, not one stampede
            raise self.retry(exc=exc, countdown=countdown, kwargs={"deferrals": deferrals + 1}) from None
        outcome = _give_up(ctx, date, hpid, REFUSED_CODE if _refused(exc) else "CIRCUIT_OPEN")
    except TebraThrottled as exc:
        if attempt < THROTTLE_RETRY_LIMIT:
            raise self.retry(exc=exc, countdown=exc.retry_after_s + random.uniform(0.05, 0.5)) from None
        outcome = _give_up(ctx, date, hpid, "TEBRA_THROTTLED")
    except (TebraUpstreamError, SoftTimeLimitExceeded) as exc:
        if attempt < DETAILS_MAX_RETRIES:
            countdown = backoff_s(attempt, settings.retry_backoff_max_s)
            raise self.retry(exc=exc, countdown=countdown) from None
        outcome = _give_up(ctx, date, hpid, "TEBRA_UPSTREAM")
    except TebraError as exc:  # security, business (not found …): asking again will not help
        outcome = _give_up(ctx, date, hpid, _code(exc))
    patient_details.release(ctx.redis, date, hpid)
    return {"date": date, "hpid": hpid, "details": outcome}


def _refused(exc: BaseException) -> bool:
    return isinstance(exc, (TebraSecurityError, CredentialsRefused))


def _deferral_s(exc: BreakerOpen | TebraSecurityError, breaker_open_s: float) -> float:
    """How long a lookup waits: the breaker's word, or a breaker period while the credentials are refused
    (an operator has to act: a day's lookups need not ask the latch every few seconds)."""
    if _refused(exc) or not isinstance(exc, BreakerOpen) or exc.retry_after_s is None:
        return breaker_open_s
    return exc.retry_after_s


def _give_up(ctx: DetailsContext, date: str, hpid: str, code: str) -> str:
    return patient_details.mark_incomplete(ctx, date, hpid, code)


def _code(exc: TebraError) -> str:
    return "TEBRA_SECURITY" if exc.outcome == "security" else "TEBRA_ERROR"
