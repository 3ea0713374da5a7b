"""The Tebra circuit breaker the gateway calls around each call, built on pybreaker with its state in Redis.

pybreaker gives the vocabulary (states, ``CircuitBreakerStorage``, listeners, ``CircuitBreakerError``); what
it lacks for several processes is added by the scripts of tasks/breaker/store.py: failures counted in a
sliding window (not consecutively), the open → half-open move and the choice of the one trial call made
in one atomic script (pybreaker's own check-then-act lets every process try at once), the latency rule, and
the operator's override. The gateway calls :meth:`TebraBreaker.guard` before each call (its ``before_call``)
and :meth:`TebraBreaker.record` after it (its ``on_call``).

When Redis cannot be reached the breaker does not guess: ``guard`` refuses the call with
:class:`~tasks.breaker.errors.BreakerUnavailable` (tasks defer, as for an open breaker) and the state reads
as ``unknown``. Nothing a call would fetch could be stored without Redis, and without the shared state and
throttle every process would pace and trip on its own, so refusing loses nothing and protects Tebra.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pybreaker
import redis

from tasks.breaker.errors import BreakerOpen, BreakerUnavailable
from tasks.breaker.state import CLOSED, HALF, OPEN, REASON_ERRORS, UNKNOWN
from tasks.breaker.storage import TO_PYBREAKER, UNAVAILABLE_RETRY_S, RedisBreakerStorage
from tasks.breaker.store import Admission, BreakerStore, unknown_state
from tasks.breaker.transition import Transition, announce
from tasks.events import EventPublisher

log = logging.getLogger(__name__)

T = TypeVar("T")

OUTCOME_FAILURE = "upstream"  # the only outcome that counts toward rule 1 (gateway.on_call outcomes)


class BreakerEvents(pybreaker.CircuitBreakerListener):
    """Logs each transition once and publishes ``breaker_state_changed`` on the ``ops`` topic.

    pybreaker notifies listeners in every process that *notices* a change; :class:`TebraBreaker` only
    notifies for the transitions its own scripts made, so each one is announced by exactly one process.
    """

    def __init__(self, publisher: EventPublisher | Callable[[], EventPublisher], by: str = "worker") -> None:
        self._publisher = publisher
        self.by = by

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        transition = getattr(cb, "last_transition", None)
        if transition is None:
            return
        publisher = self._publisher if isinstance(self._publisher, EventPublisher) else self._publisher()
        announce(publisher, transition, by=self.by, detail=getattr(cb, "last_detail", None))


class TebraBreaker(pybreaker.CircuitBreaker):
    """One breaker for Tebra, shared by every process through Redis (docs/breaker.md)."""

    def __init__(
        self, store: BreakerStore, *, listeners: list[pybreaker.CircuitBreakerListener] | None = None
    ):
        self.store = store
        self.last_transition: Transition | None = None
        self.last_detail: dict[str, Any] | None = None
        self._local = threading.local()
        self._redis_down = False
        super().__init__(
            fail_max=store.config.failure_threshold,
            reset_timeout=store.config.open_s,
            exclude=[lambda exc: getattr(exc, "outcome", OUTCOME_FAILURE) != OUTCOME_FAILURE],
            listeners=listeners,
            state_storage=RedisBreakerStorage(store),
            name="tebra",
        )

    # pybreaker announces a change in every process that notices it; here only the maker announces it.
    @property
    def state(self) -> Any:
        current = self.current_state
        if current != self._state.name:
            self._state = self._create_new_state(current, prev_state=self._state, notify=False)
        return self._state

    @state.setter
    def state(self, state_str: str) -> None:
        # Only this class's own transitions notify (see _changed); a plain assignment just re-caches.
        self._state = self._create_new_state(state_str, prev_state=self._state, notify=False)

    def open(self) -> bool:
        """Open it now in every process (pybreaker's API; the rules open it by themselves)."""
        self._changed(self.store.set_state(OPEN, REASON_ERRORS))
        return True

    def half_open(self) -> None:
        """Let the next call through as the one trial."""
        self._changed(self.store.set_state(HALF, REASON_ERRORS))

    def close(self) -> None:
        """Close it and forget the failure window."""
        self._changed(self.store.set_state(CLOSED, ""))

    def _changed(self, transition: Transition | None) -> None:
        """Re-cache pybreaker's state and notify the listeners of a transition this process made."""
        if transition is None:
            return
        target = TO_PYBREAKER.get(transition.after, pybreaker.STATE_OPEN)
        with self._lock:
            self.last_transition = transition
            try:
                self._state = self._create_new_state(target, prev_state=self._state, notify=True)
            finally:
                self.last_transition = None
                self.last_detail = None

    def guard(self, operation: str = "") -> Admission:
        """Admit one call or raise :class:`BreakerOpen` (the gateway's ``before_call``)."""
        token = uuid.uuid4().hex
        try:
            admission = self.store.admit(token)
        except redis.RedisError as exc:
            self._note_redis_down(exc)
            raise BreakerUnavailable(
                f"Tebra breaker unreadable (Redis: {type(exc).__name__}); call refused",
                state=UNKNOWN,
                retry_after_s=UNAVAILABLE_RETRY_S,
            ) from None
        self._note_redis_back()
        if admission.admitted:
            self._local.token = token  # record() tells the script which call finished (the trial?)
        if admission.transition is not None:
            self.last_detail = {"operation": operation or None}
            self._changed(admission.transition)
        if not admission.admitted:
            wait = "until cleared" if admission.retry_after_s is None else f"{admission.retry_after_s:.1f} s"
            raise BreakerOpen(
                f"Tebra breaker {admission.state} ({admission.reason or 'trial running'}): retry in {wait}",
                state=admission.state,
                reason=admission.reason,
                retry_after_s=admission.retry_after_s,
            )
        return admission

    def record(self, operation: str, seconds: float, outcome: str) -> None:
        """Count one finished call (the gateway's ``on_call``): latency always, ``upstream`` as a failure."""
        token = getattr(self._local, "token", None) or uuid.uuid4().hex
        self._local.token = None
        try:
            recorded = self.store.record(token, failed=outcome == OUTCOME_FAILURE, seconds=seconds)
        except redis.RedisError as exc:
            self._note_redis_down(exc)  # the call's own result still reaches the caller
            return
        if recorded.transition is not None:
            self.last_detail = {
                "operation": operation,
                "failures": recorded.failures,
                "p95_s": recorded.p95_s,
            }
            self._changed(recorded.transition)

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """pybreaker's ``call``, through the same shared rules as the gateway's hooks."""
        self.guard(getattr(func, "__name__", ""))
        started = time.perf_counter()
        outcome = "ok"
        try:
            return func(*args, **kwargs)
        except BaseException as exc:
            outcome = OUTCOME_FAILURE if self.is_system_error(exc) else getattr(exc, "outcome", "error")
            raise
        finally:
            self.record(getattr(func, "__name__", ""), time.perf_counter() - started, outcome)

    def snapshot(self) -> dict[str, Any]:
        """The shared state as GET /ops/breaker shows it; ``unknown`` when Redis cannot be read."""
        try:
            return self.store.snapshot()
        except redis.RedisError as exc:
            return unknown_state(exc)

    def _note_redis_down(self, exc: BaseException) -> None:
        if not self._redis_down:  # once per outage, not once per refused call
            self._redis_down = True
            log.error("tebra breaker: Redis unreachable (%s); refusing Tebra calls", type(exc).__name__)

    def _note_redis_back(self) -> None:
        if self._redis_down:
            self._redis_down = False
            log.warning("tebra breaker: Redis reachable again; the shared state applies")
