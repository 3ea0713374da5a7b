"""/ws is bounded: connection caps per IP, per user and for sockets not yet authenticated, a fast auth
deadline, replays that are bounded and rate-limited, and a re-``auth`` that drops the topics the new token
does not cover. Each test is the attack the security review described, failing.

A real API under gunicorn with the development signing key (real token checks), small caps from settings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import redis
import requests
from websockets.sync.client import ClientConnection, connect

from tasks.events import SCHEDULE_SYNCED, EventPublisher
from tasks.metrics import WEBSOCKET_CONNECTIONS
from tests.integration.ws_support import Api, redis_db12, running_api
from tests.support.processes import wait_until

DAY = "2031-04-07"
LIMITS = {
    "WS_MAX_PER_IP": "5",
    "WS_MAX_PER_USER": "2",
    "WS_MAX_UNAUTHENTICATED": "2",
    # Production's deadline: the cap test opens three sockets before the first may time out, and a loaded
    # machine (a parallel suite on 2 cores) can take longer than half a second for that.
    "WS_AUTH_TIMEOUT_S": "2.0",
    "WS_REPLAY_MAX_EVENTS": "5",
    # Two replays (10 tokens each) in a full bucket of 25, then one every 1,000 s.
    "RATE_LIMIT_CAPACITY": "25",
    "RATE_LIMIT_REFILL_PER_S": "0.01",
}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, dev_key_path: str) -> Iterator[Api]:
    redis_db12().close()
    env = {**LIMITS, "AUTH_MODE": "dev", "DEV_KEY_PATH": dev_key_path}
    with running_api(tmp_path_factory.mktemp("ws-limits"), target="app.wsgi:app", env=env) as running:
        yield running


def wait_sockets_counted(api: Api, count: int) -> None:
    """Until the server counts ``count`` sockets: a client's handshake is over before the server's handler
    has registered its socket (and a closed one is forgotten just after its close frame)."""
    wait_until(
        lambda: (
            f"{WEBSOCKET_CONNECTIONS} {count:.1f}"
            in requests.get(f"http://127.0.0.1:{api.port}/metrics", timeout=5).text
        ),
        10,
        f"{count} open websockets",
        api.proc,
        api.log,
    )


@pytest.fixture(autouse=True)
def no_sockets_left(api: Api) -> None:
    """Each test starts with no socket counted."""
    wait_sockets_counted(api, 0)


@pytest.fixture
def db() -> Iterator[redis.Redis]:
    client = redis_db12()
    yield client
    client.close()


def as_user(api: Api, token: str) -> ClientConnection:
    return connect(api.ws_url, open_timeout=5, additional_headers={"Authorization": f"Bearer {token}"})


def reply(ws: ClientConnection) -> dict[str, Any]:
    return dict(json.loads(ws.recv(timeout=5)))


def closed_with(ws: ClientConnection, timeout: float = 5) -> int:
    from websockets.exceptions import ConnectionClosed

    with pytest.raises(ConnectionClosed):
        while True:
            ws.recv(timeout=timeout)
    assert ws.protocol.close_rcvd is not None, "the server sent no close frame"
    return ws.protocol.close_rcvd.code


def subscribe(ws: ClientConnection, topics: list[str], since: str | None = None) -> dict[str, Any]:
    ws.send(json.dumps({"type": "subscribe", "topics": topics, **({"since": since} if since else {})}))
    return reply(ws)


def test_one_user_cannot_hold_more_sockets_than_the_cap(api: Api, make_token: Any) -> None:
    token = make_token(sub="cap|alice")
    with ExitStack() as stack:
        held = [stack.enter_context(as_user(api, token)) for _ in range(2)]
        for ws in held:
            assert subscribe(ws, [f"schedule:{DAY}"])["type"] == "subscribed"
        over = stack.enter_context(as_user(api, token))
        assert closed_with(over) == 4429
        other = stack.enter_context(as_user(api, make_token(sub="cap|bob")))  # others are not affected
        assert subscribe(other, [f"schedule:{DAY}"])["type"] == "subscribed"
    with as_user(api, token) as again:  # closing frees the places
        assert subscribe(again, [f"schedule:{DAY}"])["type"] == "subscribed"


def test_a_user_over_the_cap_through_the_auth_message_is_refused(api: Api, make_token: Any) -> None:
    token = make_token(sub="cap|carol")
    with ExitStack() as stack:
        for _ in range(2):
            stack.enter_context(as_user(api, token))
        wait_sockets_counted(api, 2)
        late = stack.enter_context(connect(api.ws_url, open_timeout=5))
        late.send(json.dumps({"type": "auth", "token": token}))
        body = reply(late)
        assert body["type"] == "error" and body["error"]["code"] == "TOO_MANY_SOCKETS"
        assert closed_with(late) == 4429


def test_unauthenticated_sockets_are_capped_and_time_out_fast(api: Api) -> None:
    with ExitStack() as stack:
        waiting = [stack.enter_context(connect(api.ws_url, open_timeout=5)) for _ in range(2)]
        wait_sockets_counted(api, 2)
        over = stack.enter_context(connect(api.ws_url, open_timeout=5))
        assert closed_with(over) == 4429  # refused at once (the deadline would have been 4408)
        for ws in waiting:
            assert closed_with(ws) == 4408  # no auth message within WS_AUTH_TIMEOUT_S


def test_one_address_cannot_hold_more_sockets_than_the_cap(api: Api, make_token: Any) -> None:
    with ExitStack() as stack:
        for n in range(5):
            ws = stack.enter_context(as_user(api, make_token(sub=f"cap|ip-{n}")))
            assert subscribe(ws, ["ops"])["type"] == "subscribed"
        over = stack.enter_context(as_user(api, make_token(sub="cap|ip-5")))
        assert closed_with(over) == 4429


def test_a_narrower_token_on_re_auth_drops_the_topics_it_does_not_cover(
    api: Api, make_token: Any, db: redis.Redis
) -> None:
    with as_user(api, make_token(sub="cap|dave")) as ws:
        assert subscribe(ws, ["ops", f"schedule:{DAY}"])["topics"] == ["ops", f"schedule:{DAY}"]
        ws.send(json.dumps({"type": "auth", "token": make_token(scopes=["read:schedule"], sub="cap|dave")}))
        assert reply(ws) == {"type": "authenticated", "dropped": ["ops"], "topics": [f"schedule:{DAY}"]}
        publisher = EventPublisher(db, sender="test", maxlen=1000)
        publisher.publish("breaker_state_changed", {"state": "open"})
        synced = publisher.publish(SCHEDULE_SYNCED, {"date": DAY})
        assert reply(ws) == synced  # the ops event before it never came


def test_a_replay_reads_a_bounded_amount_and_is_rate_limited(
    api: Api, make_token: Any, db: redis.Redis
) -> None:
    publisher = EventPublisher(db, sender="test", maxlen=1000)
    events = [publisher.publish(SCHEDULE_SYNCED, {"date": DAY, "n": n}) for n in range(8)]
    with as_user(api, make_token(sub="cap|erin")) as ws:
        # since "0": more than WS_REPLAY_MAX_EVENTS entries behind: nothing replayed, refetch over REST.
        assert subscribe(ws, [f"schedule:{DAY}"], since="0") == {
            "type": "subscribed",
            "topics": [f"schedule:{DAY}"],
            "replay_gap": True,
        }
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
    with as_user(api, make_token(sub="cap|erin")) as ws:
        assert "replay_gap" not in subscribe(ws, [f"schedule:{DAY}"], since=events[4]["id"])
        assert [reply(ws) for _ in range(3)] == events[5:]
    with as_user(api, make_token(sub="cap|erin")) as ws:  # the third replay in a row: over the rate limit
        assert subscribe(ws, [f"schedule:{DAY}"], since=events[4]["id"])["replay_gap"] is True
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
