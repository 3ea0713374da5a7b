"""Tebra's credentials in a worker: where they are read from, and the latch honoured before every call.

Credentials come from ``TEBRA_CREDENTIALS_FILE`` when it is set (``KEY=value`` lines: ``TEBRA_USER``,
``TEBRA_PASSWORD``, ``TEBRA_CUSTOMER_KEY``; a key the file lacks keeps its setting), else from the settings.
The file is read when a worker builds its gateway and again whenever an operator resumes after a refusal
(tasks/credentials_latch.py): fixing the file and resuming needs no restart.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis

from config.settings import Settings
from tasks import credentials_latch, events
from tasks.breaker.errors import BreakerOpen
from tasks.events import EventPublisher
from tasks.tebra.errors import TebraSecurityError

log = logging.getLogger(__name__)

LATCH_RECHECK_S = 10.0  # a task deferred by the latch looks again after this (no Tebra call meanwhile)
TRIAL_POLL_S = 0.1  # how often a call waiting for the trial's verdict looks again
# A call's outcomes that mean Tebra accepted the credentials (it answered, and not with a security refusal).
ACCEPTED_OUTCOMES = frozenset({"ok", "business"})
REFUSED_CODE = "TEBRA_CREDENTIALS_REFUSED"
_FILE_KEYS = {"TEBRA_USER": "tebra_user", "TEBRA_PASSWORD": "tebra_password",
              "TEBRA_CUSTOMER_KEY": "tebra_customer_key"}  # fmt: skip


class CredentialsError(ValueError):
    """TEBRA_CREDENTIALS_FILE cannot be read or holds a line that is not KEY=value."""


class CredentialsRefused(BreakerOpen):
    """Tebra refused our credentials and no operator has resumed since: the call is not made."""

    code = REFUSED_CODE


def credentials_refused(error: TebraSecurityError) -> CredentialsRefused:
    """The deferral of a task whose own call Tebra refused (the latch is set by then)."""
    return CredentialsRefused(str(error), reason="credentials_refused", retry_after_s=LATCH_RECHECK_S)


def with_credentials(settings: Settings) -> Settings:
    """``settings`` with the credentials of TEBRA_CREDENTIALS_FILE (unchanged when none is set)."""
    if not settings.tebra_credentials_file:
        return settings
    path = Path(settings.tebra_credentials_file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CredentialsError(f"TEBRA_CREDENTIALS_FILE unreadable ({type(exc).__name__})") from None
    values: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, equals, value = stripped.partition("=")
        if not equals or name.strip() not in _FILE_KEYS:
            # Never quote the line: it may hold a password.
            raise CredentialsError(
                f"TEBRA_CREDENTIALS_FILE line {number}: not one of {', '.join(_FILE_KEYS)}"
            )
        values[_FILE_KEYS[name.strip()]] = value.strip().strip('"').strip("'")
    return replace(settings, **values)


class CredentialsGuard:
    """Before each call (the gateway's ``before_call``): refuse while latched, and read the credentials again
    after an operator's resume. After a refusal (the gateway's ``on_refused``): set the latch; the process
    that set it announces ``tebra_credentials_refused``, once for every process."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        use_credentials: Callable[[Settings], None],
        publisher: Callable[[], EventPublisher],
    ) -> None:
        self._redis = client
        self._settings = settings
        self._use = use_credentials
        self._publisher = publisher
        self._generation: int | None = None
        self._local = threading.local()
        # A trial holds its lease for at most one call's time; the others wait that long for its verdict.
        self._trial_wait_s = settings.tebra_connect_timeout_s + settings.tebra_operation_timeout_s
        self._lease_ms = int(self._trial_wait_s * 1000) + 5000

    def check(self, operation: str) -> None:
        """Admit one call, or raise :class:`CredentialsRefused`. Until Tebra has accepted the current
        credentials, one call at a time goes out (a trial) and the others wait here for its verdict."""
        deadline = time.monotonic() + self._trial_wait_s
        token = uuid.uuid4().hex
        while True:
            try:
                verdict, refused_at, generation = credentials_latch.admit(self._redis, token, self._lease_ms)
            except redis.RedisError:
                return  # the breaker's guard, next, refuses every call while Redis cannot be read

            self._follow(generation)
            if verdict == credentials_latch.ADMIT_REFUSED:
                said = self._refusal_text()
                raise CredentialsRefused(
                    f"{operation or 'Tebra'}: not called: Tebra refused our credentials at {refused_at} "
                    f"({said}); calls resume when an operator does (POST /api/v1/ops/tebra)",
                    reason="credentials_refused",
                    retry_after_s=LATCH_RECHECK_S,
                )
            if verdict == credentials_latch.ADMIT_TRIAL:
                self._local.trial = (token, generation)
                return
            if verdict == credentials_latch.ADMIT_OK:
                return
            if time.monotonic() >= deadline:  # the trial is taking long: come back later, call nothing
                raise CredentialsRefused(
                    f"{operation or 'Tebra'}: new credentials are being tried by another call",
                    reason="credentials_trial",
                    retry_after_s=LATCH_RECHECK_S,
                )
            time.sleep(TRIAL_POLL_S)

    def _refusal_text(self) -> str:
        """What Tebra said when it refused (stored with the latch), for the deferred day's status."""
        try:
            return credentials_latch.read(self._redis).message or "no text"
        except redis.RedisError:
            return "text unavailable"

    def settle(self, outcome: str) -> None:
        """After a call (the gateway's ``on_call``): a trial call's outcome is Tebra's verdict on the
        credentials when Tebra answered it (``ok`` or ``business``); anything else leaves it open."""
        trial = getattr(self._local, "trial", None)
        if trial is None:
            return
        self._local.trial = None
        token, generation = trial
        try:
            credentials_latch.settle(self._redis, token, generation, accepted=outcome in ACCEPTED_OUTCOMES)
        except redis.RedisError:  # the lease expires by itself; the next call tries again
            log.warning("tebra credentials trial not settled (Redis unreachable)")

    def abandon(self) -> None:
        """The call admitted was not made after all (the breaker refused it): free the trial for another."""
        self.settle("not_sent")

    def _follow(self, generation: int) -> None:
        """Read the credentials again when an operator resumed since this process last looked."""
        if self._generation is None:
            self._generation = generation  # the credentials in use were read when the gateway was built
        elif generation != self._generation:
            self._reload()
            self._generation = generation

    def _reload(self) -> None:
        try:
            fresh = with_credentials(self._settings)
        except CredentialsError as exc:
            log.error("tebra credentials not read again: %s", exc)
            return
        self._use(fresh)
        log.warning("tebra credentials read again after an operator's resume")

    def refused(self, error: TebraSecurityError) -> None:
        """Latch after Tebra refused a call; announce it when this process is the one that latched."""
        refused_at = events.utc_now_iso()
        operation = error.operation or "Tebra"
        message = str(error)
        try:
            tripped = credentials_latch.trip(
                self._redis, refused_at=refused_at, operation=operation, message=message
            )
        except redis.RedisError:
            # Not latched: the task still defers, and the next call that reaches Tebra latches it.
            log.error("tebra refused our credentials; latch not set (Redis unreachable)")
            return
        if not tripped:
            return
        log.error(
            "tebra refused our credentials; every Tebra call stops until an operator resumes",
            extra={"operation": operation, "error": message, "code": REFUSED_CODE},
        )
        data = {"refused_at": refused_at, "operation": operation, "message": message}
        self._publisher().publish(events.TEBRA_CREDENTIALS_REFUSED, data)
