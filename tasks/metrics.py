"""Every Prometheus metric of the system: names in one place, instruments built on first use.

prometheus-client picks its storage when it is first imported (in-memory, or one file per process when
``PROMETHEUS_MULTIPROC_DIR`` is set, as gunicorn and the prefork worker need), so nothing here imports it at
module level: the worker prepares the directory first (workers/metrics.py), then the instruments are built.

Labels are low-cardinality names only (route, status, task name, state, Tebra operation, outcome, stream,
queue): never a date, an id or anything about a patient.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis

from tasks import keys
from tasks.events import parse_instant

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram
    from prometheus_client.core import Metric

log = logging.getLogger(__name__)

PREFIX = "clinic_relay_"

# --- names (one line each in docs/operations.md)
HTTP_REQUEST_SECONDS = PREFIX + "http_request_duration_seconds"  # route, method, status
TASKS = (
    PREFIX + "tasks_total"
)  # task, state: received, started, succeeded, failed, retried, rejected, revoked
TASK_SECONDS = PREFIX + "task_duration_seconds"  # task, state (succeeded, failed, retried)
TEBRA_CALL_SECONDS = PREFIX + "tebra_call_duration_seconds"  # operation, outcome
THROTTLE_WAIT_SECONDS = PREFIX + "tebra_throttle_wait_seconds"  # operation
BREAKER_STATE = PREFIX + "tebra_breaker_state"  # 0 closed, 1 half-open, 2 open (read from cb:tebra)
TEBRA_UNKNOWN_MEMBERS = PREFIX + "tebra_unknown_members_total"  # operation, member: ignored reply members
TEBRA_CREDENTIALS_REFUSED = PREFIX + "tebra_credentials_refused"  # 1 while the credentials latch is set
SUSPECT_EMPTY_READS = PREFIX + "schedule_suspect_empty_total"  # full reads of no rows kept as suspect_empty
ROWS_REJECTED = PREFIX + "schedule_rows_rejected_total"  # appointment rows set aside as unmappable
STREAM_LENGTH = PREFIX + "stream_length"  # stream
STREAM_GROUP_LAG = PREFIX + "stream_group_lag"  # stream, group: entries not yet delivered to the group
STREAM_GROUP_PENDING = PREFIX + "stream_group_pending"  # stream, group: delivered, not yet acknowledged
QUEUE_DEPTH = PREFIX + "queue_depth"  # queue: messages waiting in a Celery queue
REDIS_UP = PREFIX + "redis_up"  # 1 when the scrape-time Redis reads answered
WEBSOCKET_CONNECTIONS = PREFIX + "websocket_connections"
WEBSOCKET_DROPPED = PREFIX + "websocket_dropped_total"  # slow sockets dropped by the relay
WATCH_POLL_AGE = PREFIX + "watch_last_poll_age_seconds"  # since the last successful poll began (watch:tebra)
TEBRA_CLOCK_BEHIND = (
    PREFIX + "tebra_clock_behind_max_seconds"
)  # measured bound on the stamps' lag (tebra:clock)

BREAKER_STATES = {"closed": 0, "half": 1, "half-open": 1, "open": 2}
STREAMS = (keys.AGENT_UPDATES, keys.TASK_RESULTS, keys.AUDIT)
PRIORITY_SEPARATOR = "\x06\x16"  # kombu's Redis transport: a queue's priority lists are "<queue>\x06\x16<n>"
PRIORITY_STEPS = (3, 6, 9)

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
TASK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TEBRA_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
WAIT_BUCKETS = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
SCRAPE_TIMEOUT_S = 0.25  # Redis reads at scrape time: a hung Redis makes the scrape say so, not hang


@dataclass(frozen=True)
class Instruments:
    """The metrics this process updates."""

    http_request_seconds: Histogram
    tasks: Counter
    task_seconds: Histogram
    tebra_call_seconds: Histogram
    throttle_wait_seconds: Histogram
    unknown_members: Counter
    suspect_empty: Counter
    rows_rejected: Counter


@functools.cache
def instruments() -> Instruments:
    """This process's instruments, registered once in the default registry."""
    from prometheus_client import Counter, Histogram

    return Instruments(
        http_request_seconds=Histogram(
            HTTP_REQUEST_SECONDS,
            "API request latency by route template and status.",
            ["route", "method", "status"],
            buckets=HTTP_BUCKETS,
        ),
        tasks=Counter(TASKS, "Celery task transitions by task name and state.", ["task", "state"]),
        task_seconds=Histogram(
            TASK_SECONDS,
            "Celery task run time by task name and final state.",
            ["task", "state"],
            buckets=TASK_BUCKETS,
        ),
        tebra_call_seconds=Histogram(
            TEBRA_CALL_SECONDS,
            "Tebra SOAP call latency by operation and outcome.",
            ["operation", "outcome"],
            buckets=TEBRA_BUCKETS,
        ),
        throttle_wait_seconds=Histogram(
            THROTTLE_WAIT_SECONDS,
            "Time a Tebra call waited for the shared throttle, by operation.",
            ["operation"],
            buckets=WAIT_BUCKETS,
        ),
        unknown_members=Counter(
            TEBRA_UNKNOWN_MEMBERS,
            "Members of Tebra replies the WSDL does not declare (ignored), by operation and member name.",
            ["operation", "member"],
        ),
        suspect_empty=Counter(
            SUSPECT_EMPTY_READS, "Full reads that returned no real rows for a day that held some (kept)."
        ),
        rows_rejected=Counter(
            ROWS_REJECTED, "Appointment rows Tebra sent that could not be mapped (set aside)."
        ),
    )


def observe_tebra_call(operation: str, seconds: float, outcome: str) -> None:
    """``TebraGateway(on_call=…)``: one finished SOAP call."""
    instruments().tebra_call_seconds.labels(operation, outcome).observe(seconds)


def observe_throttle_wait(operation: str, seconds: float) -> None:
    """``TebraGateway(on_wait=…)``: time spent waiting for the shared throttle."""
    instruments().throttle_wait_seconds.labels(operation).observe(seconds)


def observe_unknown_member(operation: str, member: str) -> None:
    """``TebraGateway(on_unknown=…)``: a reply member the schema does not declare. Member names are the
    schema's kind of name (letters and digits); anything else is counted as ``other``."""
    label = member if member.isascii() and member.isalnum() and len(member) <= 64 else "other"
    instruments().unknown_members.labels(operation, label).inc()


def count_suspect_empty() -> None:
    """A full read kept as ``suspect_empty``."""
    instruments().suspect_empty.inc()


def count_rows_rejected(rows: int) -> None:
    """Rows of a read set aside as unmappable."""
    if rows:
        instruments().rows_rejected.inc(rows)


class RedisCollector:
    """Stream lengths, group lag, Celery queue depths and the breaker state, read from Redis at scrape time.

    The breaker's state is the one every worker shares (``cb:tebra``, ``cb:force_open``), as stored: an open
    breaker whose time is up shows ``open`` until the next call moves it to half-open.

    Values are global (one Redis): scrape it from one process kind (the API) and aggregate with ``max``.
    """

    def __init__(
        self, data: Callable[[], redis.Redis], broker: Callable[[], redis.Redis], queues: tuple[str, ...]
    ) -> None:
        self._data = data
        self._broker = broker
        self._queues = queues

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        length = GaugeMetricFamily(STREAM_LENGTH, "Entries in a Redis stream (capped).", labels=["stream"])
        lag = GaugeMetricFamily(
            STREAM_GROUP_LAG,
            "Stream entries not yet delivered to a consumer group.",
            labels=["stream", "group"],
        )
        pending = GaugeMetricFamily(
            STREAM_GROUP_PENDING,
            "Stream entries delivered to a consumer group but not acknowledged.",
            labels=["stream", "group"],
        )
        depth = GaugeMetricFamily(QUEUE_DEPTH, "Messages waiting in a Celery queue.", labels=["queue"])
        breaker = GaugeMetricFamily(BREAKER_STATE, "Tebra circuit breaker: 0 closed, 1 half-open, 2 open.")
        watch_age = GaugeMetricFamily(
            WATCH_POLL_AGE,
            "Seconds since the watch's last successful poll of Tebra began (alert: 2x interval).",
        )
        clock = GaugeMetricFamily(
            TEBRA_CLOCK_BEHIND, "How far Tebra's LastModifiedDate stamps may run behind our clock (measured)."
        )
        refused = GaugeMetricFamily(
            TEBRA_CREDENTIALS_REFUSED, "1 while Tebra's refusal of our credentials stops every call."
        )
        up = 1.0
        try:
            self._read_streams(self._data(), length, lag, pending)
            self._read_queues(self._broker(), depth)
            breaker.add_metric([], self._read_breaker(self._data()))
            self._read_watch(self._data(), watch_age, clock)
            refused.add_metric([], 1.0 if self._data().hget(keys.TEBRA_CREDENTIALS, "refused_at") else 0.0)
        except (redis.RedisError, OSError) as exc:
            log.warning("metrics: redis read failed: %s", type(exc).__name__)
            up = 0.0
        yield from (length, lag, pending, depth, breaker, watch_age, clock, refused)
        yield GaugeMetricFamily(REDIS_UP, "1 when the scrape-time Redis reads answered.", value=up)

    @staticmethod
    def _read_streams(client: redis.Redis, length: Any, lag: Any, pending: Any) -> None:
        pipe = client.pipeline(transaction=False)
        for stream in STREAMS:
            pipe.xlen(stream)
        lengths = pipe.execute()
        for stream, value in zip(STREAMS, lengths, strict=True):
            length.add_metric([stream], float(value))
            if not value:
                continue
            try:
                groups = client.xinfo_groups(stream)
            except redis.ResponseError:  # no such key (trimmed to nothing and deleted)
                continue
            for group in groups:
                name = _text(group.get("name"))
                if group.get("lag") is not None:  # None when Redis cannot tell (after deletions)
                    lag.add_metric([stream, name], float(group["lag"]))
                pending.add_metric([stream, name], float(group.get("pending") or 0))

    @staticmethod
    def _read_breaker(client: redis.Redis) -> float:
        pipe = client.pipeline(transaction=False)
        pipe.hget(keys.BREAKER, "state")
        pipe.exists(keys.BREAKER_FORCE_OPEN)
        state, forced = pipe.execute()
        return float(BREAKER_STATES["open"] if forced else BREAKER_STATES.get(_text(state or "closed"), 0))

    @staticmethod
    def _read_watch(client: redis.Redis, age: Any, clock: Any) -> None:
        pipe = client.pipeline(transaction=False)
        pipe.hget(keys.WATCH_STATE, "last_started_at")
        pipe.hget(keys.TEBRA_CLOCK, "behind_max_s")
        last, behind = pipe.execute()
        started = parse_instant(last)
        if started is not None:
            age.add_metric([], max(0.0, (datetime.now(UTC) - started).total_seconds()))
        if behind:
            clock.add_metric([], float(behind))

    def _read_queues(self, client: redis.Redis, depth: Any) -> None:
        pipe = client.pipeline(transaction=False)
        for queue in self._queues:
            pipe.llen(queue)
            for step in PRIORITY_STEPS:
                pipe.llen(f"{queue}{PRIORITY_SEPARATOR}{step}")
        counts = pipe.execute()
        per_queue = len(PRIORITY_STEPS) + 1
        for index, queue in enumerate(self._queues):
            depth.add_metric([queue], float(sum(counts[index * per_queue : (index + 1) * per_queue])))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def scrape_client(url: str) -> redis.Redis:
    """A Redis client for scrape-time reads: short timeouts, no retries."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=SCRAPE_TIMEOUT_S,
        socket_connect_timeout=SCRAPE_TIMEOUT_S,
        retry=None,
    )
