"""The one retry policy every Tebra task shell applies (tasks/retry.py): a failure, the attempts and the
deferrals so far in; retry, defer or fail out, with the countdown and the error code."""

from __future__ import annotations

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from tasks import retry
from tasks.breaker.errors import BreakerOpen, BreakerUnavailable
from tasks.retry import DEFER, FAIL, RETRY, Limits, decide
from tasks.tebra.credentials import LATCH_RECHECK_S, REFUSED_CODE, CredentialsRefused
from tasks.tebra.errors import (
    TebraBusinessError,
    TebraSecurityError,
    TebraThrottled,
    TebraUpstreamError,
)

SYNC = Limits(outage_retries=8, breaker_open_s=60.0, backoff_cap_s=300)
DETAILS = Limits(3, 60.0, 300, max_deferrals=60, refused_wait_s=60.0, defer_jitter_s=(0.5, 5.0))
PROVIDERS = Limits(5, 60.0, 300, throttle_retries=5, wait_held_open=False)


def throttled(after_s: float = 1.0) -> TebraThrottled:
    return TebraThrottled("GetAppointments: throttled", "GetAppointments", interval_ms=round(after_s * 1000))


def test_throttling_is_retried_after_tebras_interval_until_the_throttle_limit() -> None:
    verdict = decide(throttled(2.0), attempt=0, deferrals=0, limits=SYNC)
    assert verdict is not None and (verdict.action, verdict.code) == (RETRY, "TEBRA_THROTTLED")
    assert 2.05 <= verdict.countdown <= 2.5
    at_limit = decide(throttled(), attempt=retry.THROTTLE_RETRY_LIMIT, deferrals=0, limits=SYNC)
    assert at_limit is not None and (at_limit.action, at_limit.code) == (FAIL, "TEBRA_THROTTLED")
    assert decide(throttled(), attempt=5, deferrals=0, limits=PROVIDERS).action == FAIL  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("exc", "code"),
    [(TebraUpstreamError("InternalServiceFault", "GetAppointments"), "TEBRA_UPSTREAM"),
     (SoftTimeLimitExceeded(), "TIME_LIMIT")],
)  # fmt: skip
def test_an_outage_backs_off_with_jitter_then_fails(exc: BaseException, code: str) -> None:
    for attempt in range(SYNC.outage_retries):
        verdict = decide(exc, attempt=attempt, deferrals=0, limits=SYNC)
        assert verdict is not None and (verdict.action, verdict.code) == (RETRY, code)
        assert 1.0 <= verdict.countdown <= min(300, 2.0 * 2**attempt)
    last = decide(exc, attempt=SYNC.outage_retries, deferrals=0, limits=SYNC)
    assert last is not None and (last.action, last.code) == (FAIL, code)
    assert decide(exc, attempt=3, deferrals=0, limits=DETAILS).action == FAIL  # type: ignore[union-attr]


def test_a_business_error_fails_at_once() -> None:
    verdict = decide(
        TebraBusinessError("bad request", "GetAppointments"), attempt=0, deferrals=0, limits=SYNC
    )
    assert verdict is not None and (verdict.action, verdict.code, verdict.countdown) == (
        FAIL,
        "TEBRA_ERROR",
        0.0,
    )


def test_an_open_breaker_defers_for_its_word_and_spends_no_attempt() -> None:
    verdict = decide(BreakerOpen("open", retry_after_s=12.0), attempt=99, deferrals=500, limits=SYNC)
    assert verdict is not None and (verdict.action, verdict.code) == (DEFER, "CIRCUIT_OPEN")
    assert 12.05 <= verdict.countdown <= 12.5 and isinstance(verdict.refusal, BreakerOpen)
    unknown = decide(BreakerUnavailable("redis down", retry_after_s=5.0), attempt=0, deferrals=0, limits=SYNC)
    assert unknown is not None and (unknown.action, unknown.code) == (DEFER, "CIRCUIT_OPEN")


def test_a_breaker_held_open_waits_a_breaker_period_or_ends_the_job() -> None:
    held = BreakerOpen("forced open", reason="forced", retry_after_s=None)
    verdict = decide(held, attempt=0, deferrals=0, limits=SYNC)
    assert verdict is not None and verdict.action == DEFER and 60.05 <= verdict.countdown <= 60.5
    ended = decide(held, attempt=0, deferrals=0, limits=PROVIDERS)
    assert ended is not None and (ended.action, ended.code) == (FAIL, retry.CIRCUIT_OPEN)


def test_refused_credentials_defer_by_the_latch_or_by_the_jobs_own_wait() -> None:
    refused = TebraSecurityError("Invalid user name and/or password", "GetAppointments")
    verdict = decide(refused, attempt=0, deferrals=0, limits=SYNC)
    assert verdict is not None and (verdict.action, verdict.code) == (DEFER, REFUSED_CODE)
    assert isinstance(verdict.refusal, CredentialsRefused)
    assert LATCH_RECHECK_S + 0.05 <= verdict.countdown <= LATCH_RECHECK_S + 0.5
    latched = CredentialsRefused("latched", reason="credentials_refused", retry_after_s=LATCH_RECHECK_S)
    lookup = decide(latched, attempt=0, deferrals=0, limits=DETAILS)
    assert lookup is not None and lookup.action == DEFER and 60.5 <= lookup.countdown <= 65.0


def test_deferrals_end_where_the_job_stops_waiting() -> None:
    open_ = BreakerOpen("open", retry_after_s=30.0)
    assert decide(open_, attempt=0, deferrals=59, limits=DETAILS).action == DEFER  # type: ignore[union-attr]
    gave_up = decide(open_, attempt=0, deferrals=60, limits=DETAILS)
    assert gave_up is not None and (gave_up.action, gave_up.code) == (FAIL, "CIRCUIT_OPEN")
    refused = decide(TebraSecurityError("refused", "GetPatient"), attempt=0, deferrals=60, limits=DETAILS)
    assert refused is not None and (refused.action, refused.code) == (FAIL, REFUSED_CODE)


def test_what_is_not_tebras_failure_is_not_the_policys() -> None:
    assert decide(ValueError("a bug"), attempt=0, deferrals=0, limits=SYNC) is None
    assert decide(ConnectionError("redis"), attempt=0, deferrals=0, limits=SYNC) is None


def test_backoff_grows_and_is_capped() -> None:
    assert all(1.0 <= retry.backoff_s(0, 300) <= 2.0 for _ in range(50))
    assert all(1.0 <= retry.backoff_s(20, 300) <= 300 for _ in range(50))
