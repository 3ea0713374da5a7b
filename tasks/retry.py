"""The one retry policy of every task that calls Tebra: a failure, the attempt and the deferrals so far →
retry, defer or fail, with the countdown and the error code (docs/tebra.md, "What the sync does with each").

- An open breaker, or credentials Tebra refused (the latch), is no failure: the job is **deferred** until a
  call may go out, and a deferral spends no attempt. ``max_deferrals`` bounds it where waiting stops being
  worth it (a patient's details).
- Throttling is pacing: **retry** after Tebra's interval, up to ``throttle_retries`` attempts.
- An outage (a fault, 5xx, a timeout, the task's soft time limit) is **retried** with exponential backoff
  and full jitter, up to ``outage_retries`` attempts.
- Anything else from Tebra (a business error: our request or its data is wrong) **fails** at once.

Plain data in, a :class:`Verdict` out: a task shell applies it (tasks/job.py), the capability records it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from celery.exceptions import SoftTimeLimitExceeded

from tasks.breaker.errors import BreakerOpen
from tasks.tebra.credentials import CredentialsRefused, credentials_refused
from tasks.tebra.errors import TebraError, TebraSecurityError, TebraThrottled, TebraUpstreamError

RETRY = "retry"
DEFER = "defer"
FAIL = "fail"
THROTTLE_RETRY_LIMIT = 30  # throttling is pacing, not an outage: it may take many turns, but not forever
CIRCUIT_OPEN = "CIRCUIT_OPEN"
# What the policy decides about; anything else is not Tebra's failure and goes up as it is.
FAILURES = (TebraError, BreakerOpen, SoftTimeLimitExceeded)


@dataclass(frozen=True)
class Limits:
    """How long one kind of job keeps trying."""

    outage_retries: int  # upstream faults and time limits (TASK_MAX_RETRIES for a sync)
    breaker_open_s: float  # the wait when the breaker names none (held open by an operator)
    backoff_cap_s: float  # RETRY_BACKOFF_MAX_S
    throttle_retries: int = THROTTLE_RETRY_LIMIT
    max_deferrals: int | None = None  # None: wait with the breaker as long as it takes
    refused_wait_s: float | None = None  # refused credentials: wait this long (None: the latch's own recheck)
    wait_held_open: bool = True  # False: a breaker held open by an operator fails the job now
    defer_jitter_s: tuple[float, float] = (0.05, 0.5)  # spreads deferred jobs: not one stampede


@dataclass(frozen=True)
class Verdict:
    """What to do with a failed attempt. ``refusal`` (a deferral, or a failure that was one): what refused
    the call, the breaker or the credentials latch; its ``state``, ``reason`` and message say why."""

    action: str
    code: str
    countdown: float = 0.0
    refusal: BreakerOpen | None = None


def backoff_s(attempt: int, cap_s: float) -> float:
    """Exponential backoff with full jitter: spreads retries of many tasks over the window."""
    return random.uniform(1.0, min(cap_s, 2.0 * (2**attempt)))


def decide(exc: BaseException, *, attempt: int, deferrals: int, limits: Limits) -> Verdict | None:
    """The verdict on ``exc`` after ``attempt`` attempts (deferrals not counted) and ``deferrals`` deferrals;
    None when ``exc`` is none of Tebra's failures (it is not this policy's to handle)."""
    if isinstance(exc, BreakerOpen | TebraSecurityError):
        return _refused(exc, deferrals, limits)
    if isinstance(exc, TebraThrottled):
        if attempt >= limits.throttle_retries:
            return Verdict(FAIL, "TEBRA_THROTTLED")
        return Verdict(RETRY, "TEBRA_THROTTLED", exc.retry_after_s + random.uniform(0.05, 0.5))
    if isinstance(exc, TebraUpstreamError | SoftTimeLimitExceeded):
        code = "TEBRA_UPSTREAM" if isinstance(exc, TebraUpstreamError) else "TIME_LIMIT"
        if attempt >= limits.outage_retries:
            return Verdict(FAIL, code)
        return Verdict(RETRY, code, backoff_s(attempt, limits.backoff_cap_s))
    if isinstance(exc, TebraError):
        return Verdict(FAIL, "TEBRA_SECURITY" if exc.outcome == "security" else "TEBRA_ERROR")
    return None


def _refused(exc: BreakerOpen | TebraSecurityError, deferrals: int, limits: Limits) -> Verdict:
    """Tebra is being spared (an open breaker), or our credentials were refused (the latch, set by this
    refusal or an earlier one, holds every call until an operator resumes): come back when a call may go
    out."""
    refusal = exc if isinstance(exc, BreakerOpen) else credentials_refused(exc)
    code = str(getattr(refusal, "code", CIRCUIT_OPEN))
    if limits.max_deferrals is not None and deferrals >= limits.max_deferrals:
        return Verdict(FAIL, code, refusal=refusal)
    if isinstance(refusal, CredentialsRefused) and limits.refused_wait_s is not None:
        wait = limits.refused_wait_s
    elif refusal.retry_after_s is not None:
        wait = refusal.retry_after_s
    elif limits.wait_held_open:
        wait = limits.breaker_open_s
    else:
        return Verdict(FAIL, code, refusal=refusal)
    return Verdict(DEFER, code, wait + random.uniform(*limits.defer_jitter_s), refusal)
