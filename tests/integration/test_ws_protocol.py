"""The /ws protocol at its edges: error frames for bad messages, authentication (header, first message,
deadline), close codes, no compression, server pings, and 1001 on SIGTERM.

Real processes: the API under gunicorn with the development authenticator, and with a strict one installed
through the hook (``tests.integration.ws_support:strict_app()``).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.integration.ws_support import (
    GOOD_TOKEN,
    SHORT_TOKEN,
    STRICT_APP,
    Api,
    RawSocket,
    redis_db12,
    running_api,
)

DAY = "2031-02-03"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The API with the development authenticator (accepts any socket)."""
    redis_db12().close()
    with running_api(tmp_path_factory.mktemp("ws-proto")) as running:
        yield running


@pytest.fixture(scope="module")
def strict_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The API with an authenticator that accepts only GOOD_TOKEN, first message within 1 s."""
    with running_api(tmp_path_factory.mktemp("ws-strict"), target=STRICT_APP) as api:
        yield api


def reply(ws: ClientConnection) -> dict[str, Any]:
    return dict(json.loads(ws.recv(timeout=5)))


def error_code(ws: ClientConnection) -> str:
    body = reply(ws)
    assert body["type"] == "error" and body["error"]["message"], body
    return str(body["error"]["code"])


def close_code(ws: ClientConnection, timeout: float = 5) -> int | None:
    with pytest.raises(ConnectionClosed):
        while True:
            ws.recv(timeout=timeout)
    received = ws.protocol.close_rcvd
    assert received is not None, "the server sent no close frame"
    return received.code


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not json", "BAD_JSON"),
        ("[1, 2]", "BAD_MESSAGE"),
        ('{"topics": ["ops"]}', "BAD_MESSAGE"),
        ('{"type": "dance"}', "UNKNOWN_TYPE"),
        ('{"type": "subscribe", "topics": "ops"}', "BAD_MESSAGE"),
        ('{"type": "subscribe", "topics": []}', "BAD_MESSAGE"),
        ('{"type": "subscribe", "topics": ["schedule:tomorrow"]}', "BAD_TOPIC"),
        ('{"type": "subscribe", "topics": ["schedule:2031-02-30"]}', "BAD_TOPIC"),
        ('{"type": "subscribe", "topics": ["appointments:2031-02-03"]}', "BAD_TOPIC"),
        ('{"type": "subscribe", "topics": ["OPS"]}', "BAD_TOPIC"),
        (
            json.dumps({"type": "subscribe", "topics": [f"schedule:2031-03-{d:02d}" for d in range(1, 18)]}),
            "TOO_MANY_TOPICS",
        ),
        ('{"type": "subscribe", "topics": ["ops"], "since": "yesterday"}', "BAD_SINCE"),
        ('{"type": "subscribe", "topics": ["ops"], "since": 17}', "BAD_SINCE"),
        ('{"type": "auth", "token": ""}', "BAD_MESSAGE"),
        (b"\xff\xfe{", "BAD_ENCODING"),
    ],
)
def test_a_bad_message_gets_an_error_frame_and_the_socket_stays_open(
    api: Api, message: str | bytes, code: str
) -> None:
    with connect(api.ws_url) as ws:
        ws.send(message)
        assert error_code(ws) == code
        ws.send('{"type": "ping"}')
        assert reply(ws) == {"type": "pong"}


def test_topics_are_capped_per_socket_across_messages(api: Api) -> None:
    with connect(api.ws_url) as ws:
        for day in range(1, 17):
            ws.send(json.dumps({"type": "subscribe", "topics": [f"schedule:2031-04-{day:02d}"]}))
            answer = reply(ws)
            assert answer["type"] == "subscribed", answer
        ws.send(json.dumps({"type": "subscribe", "topics": ["ops"]}))
        assert error_code(ws) == "TOO_MANY_TOPICS"


def test_invalid_utf8_in_a_text_frame_closes_with_1007(api: Api) -> None:
    raw = RawSocket(api.port)
    raw.send_frame(0x1, b'{"type": "ping", "x": "\xff"}')
    opcode, payload = raw.read_frame()
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1007
    raw.close()


def test_a_message_over_the_size_limit_closes_with_1009(api: Api) -> None:
    with connect(api.ws_url) as ws:
        ws.send(json.dumps({"type": "ping", "pad": "x" * 5000}))
        assert close_code(ws) == 1009


def test_permessage_deflate_is_declined(api: Api) -> None:
    with connect(api.ws_url, compression="deflate") as ws:  # the client offers it, as browsers do
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send('{"type": "ping"}')
        assert reply(ws) == {"type": "pong"}


def test_the_development_authenticator_lets_any_socket_in(api: Api) -> None:
    with connect(api.ws_url, additional_headers={"Authorization": "Bearer anything"}) as ws:
        ws.send(json.dumps({"type": "subscribe", "topics": ["ops"]}))
        assert reply(ws)["type"] == "subscribed"
    with connect(api.ws_url) as ws:
        ws.send(json.dumps({"type": "auth", "token": "whatever"}))
        assert reply(ws) == {"type": "authenticated"}


def test_plain_http_on_the_socket_path_is_refused(api: Api) -> None:
    import requests

    response = requests.get(f"http://127.0.0.1:{api.port}/ws", timeout=5)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


def test_a_browser_authenticates_with_its_first_message(strict_api: Api) -> None:
    with connect(strict_api.ws_url) as ws:
        ws.send(json.dumps({"type": "auth", "token": GOOD_TOKEN}))
        assert reply(ws) == {"type": "authenticated"}
        ws.send(json.dumps({"type": "subscribe", "topics": [f"schedule:{DAY}"]}))
        assert reply(ws) == {"type": "subscribed", "topics": [f"schedule:{DAY}"]}
        ws.send(json.dumps({"type": "subscribe", "topics": [f"patients:{DAY}", "ops"]}))
        assert error_code(ws) == "FORBIDDEN"  # the topic policy hook: ops needs an ops token
        ws.send(json.dumps({"type": "ping"}))
        assert reply(ws) == {"type": "pong"}  # and nothing was subscribed


def test_a_socket_is_closed_when_its_token_expires_unless_it_sends_a_fresh_one(strict_api: Api) -> None:
    with connect(strict_api.ws_url) as expiring, connect(strict_api.ws_url) as refreshed:
        for ws in (expiring, refreshed):
            ws.send(json.dumps({"type": "auth", "token": SHORT_TOKEN}))
            assert reply(ws) == {"type": "authenticated"}
        refreshed.send(json.dumps({"type": "auth", "token": GOOD_TOKEN}))
        assert reply(refreshed) == {"type": "authenticated"}
        assert error_code(expiring) == "UNAUTHORIZED"
        assert close_code(expiring) == 4401
        refreshed.send(json.dumps({"type": "ping"}))
        assert reply(refreshed) == {"type": "pong"}


def test_a_refused_token_in_the_first_message_closes_with_4401(strict_api: Api) -> None:
    with connect(strict_api.ws_url) as ws:
        ws.send(json.dumps({"type": "auth", "token": "forged"}))
        assert error_code(ws) == "UNAUTHORIZED"
        assert close_code(ws) == 4401


def test_a_first_message_without_a_token_is_refused_by_a_real_authenticator(strict_api: Api) -> None:
    with connect(strict_api.ws_url) as ws:
        ws.send(json.dumps({"type": "subscribe", "topics": ["ops"]}))
        assert error_code(ws) == "UNAUTHORIZED"
        assert close_code(ws) == 4401


def test_no_first_message_within_the_deadline_closes_with_4408(strict_api: Api) -> None:
    with connect(strict_api.ws_url) as ws:
        started = time.monotonic()
        assert error_code(ws) == "UNAUTHORIZED"
        assert close_code(ws) == 4408
        assert 0.8 < time.monotonic() - started < 3


def test_a_header_token_authenticates_before_the_upgrade(strict_api: Api) -> None:
    with connect(strict_api.ws_url, additional_headers={"Authorization": f"Bearer {GOOD_TOKEN}"}) as ws:
        time.sleep(1.5)  # past the first-message deadline: a header token needs no first message
        ws.send(json.dumps({"type": "subscribe", "topics": [f"schedule:{DAY}"]}))
        assert reply(ws)["type"] == "subscribed"
    with pytest.raises(InvalidStatus) as refused:
        connect(strict_api.ws_url, additional_headers={"Authorization": "Bearer forged"})
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body or b"{}")["error"]["code"] == "UNAUTHORIZED"


def test_server_pings_keep_an_idle_socket_and_sigterm_closes_sockets_with_1001(tmp_path: Path) -> None:
    with running_api(tmp_path, env={"WS_PING_INTERVAL_S": "0.5"}) as api:
        raw = RawSocket(api.port)
        raw.send_json({"type": "subscribe", "topics": [f"schedule:{DAY}"]})
        first = raw.read_frame()[1]
        assert json.loads(first)["type"] == "subscribed", first
        for _ in range(3):  # answered pings keep it open past several intervals
            opcode, payload = raw.read_frame()
            assert opcode == 0x9
            raw.send_frame(0xA, payload)

        with ExitStack() as stack:
            clients = [stack.enter_context(connect(api.ws_url)) for _ in range(3)]
            for ws in clients:
                ws.send(json.dumps({"type": "subscribe", "topics": ["ops"]}))
                answer = reply(ws)
            assert answer["type"] == "subscribed", answer
            started = time.monotonic()
            api.proc.send_signal(signal.SIGTERM)
            codes = [close_code(ws) for ws in clients]
            assert codes == [1001, 1001, 1001]
            api.proc.wait(10)
            assert time.monotonic() - started < 5  # well before gunicorn's graceful_timeout (10 s)
        raw.close()
