"""What a refused Tebra call raises: the breaker is open, half-open with its trial taken, or unreadable.

Tasks defer on :class:`BreakerOpen` (the one retry policy, tasks/retry.py, that every task shell applies): a
refusal is not a failure and does not use up the retry budget.
"""

from __future__ import annotations

from typing import Any

import pybreaker

from tasks.breaker.state import OPEN


class BreakerOpen(pybreaker.CircuitBreakerError):
    """The breaker refused a Tebra call; ``retry_after_s`` None means "until an operator clears it"."""

    def __init__(
        self,
        message: str,
        *,
        state: str = OPEN,
        reason: str = "",
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.state = state
        self.reason = reason
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[Any, ...]:
        # Celery pickles the exception of a retry: rebuild from the message, keep the fields.
        return (type(self), (str(self),), self.__dict__)


class BreakerUnavailable(BreakerOpen):
    """Redis, which holds the breaker, cannot be reached: the call is refused, the state is unknown."""
