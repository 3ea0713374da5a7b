"""Signing in to the board for real: headless Chromium, a real OpenID provider, the whole stack.

The provider is panva's oidc-provider run by Node (tests/support/oidc_provider.py), configured as Auth0
serves an API: JWT access tokens for our audience, a public client with PKCE, refresh tokens rotated on use,
access tokens that live 20 s (so renewal happens during the test). The API runs under gunicorn with
AUTH_MODE=oidc against it, with the worker and the Tebra simulator of the session. Users sign in on the
provider's development login form; the login's prefix picks the role the provider puts in the token.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tasks.patients import flow
from tests.support.browser import clinic_weekday
from tests.support.oidc_provider import Provider, missing_tools, start_provider
from tests.support.processes import BIN, free_port, spawn, stop, wait_until

# One worker runs the whole file (tests/conftest.py): the provider, its API and the browser start once.
pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("worker"), pytest.mark.xdist_group("sign-in")]

ACCESS_TTL_S = 20


@dataclass(frozen=True)
class Stack:
    board: str  # the API's origin: the board page, /api, /ws
    provider: Provider


@pytest.fixture(scope="module")
def stack(stack_env: dict[str, str], logs_dir: Path) -> Iterator[Stack]:
    """The provider, then the API trusting it (AUTH_MODE=oidc) on a port the provider knows as the board."""
    reason = missing_tools()
    if reason:
        pytest.skip(reason)
    port = free_port()
    board = f"http://127.0.0.1:{port}"
    with start_provider(
        board=board, log=logs_dir / "oidc-provider.log", access_ttl_s=ACCESS_TTL_S
    ) as provider:
        env = {
            **stack_env,
            "AUTH_MODE": "oidc",
            "OIDC_ISSUER": provider.issuer,
            "OIDC_AUDIENCE": provider.audience,
            "OIDC_CLIENT_ID": provider.client_id,
            "OIDC_ROLE_CLAIM": provider.role_claim,
        }
        log = logs_dir / "api-oidc.log"
        args = [
            str(BIN / "gunicorn"),
            "-c",
            "app/gunicorn_conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            "app.wsgi:app",
        ]
        proc = spawn(args, env, log)
        wait_until(lambda: requests.get(f"{board}/health", timeout=1).ok, 30, "api (oidc)", proc, log)
        yield Stack(board=board, provider=provider)
        stop(proc)


class Browsing:
    """One browser context: the page, what it sent to the provider, and the tokens the provider gave it."""

    def __init__(self, browser: Any, stack: Stack, config: dict[str, Any] | None = None) -> None:
        self.stack = stack
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.token_responses: list[Any] = []
        self.authorize_urls: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("response", self._seen)
        self.page.on("request", self._asked)
        if config:  # this context's board is told other values (the provider and the API are real)
            self.context.route(f"{stack.board}/board/config", lambda route: self._patched(route, config))

    def _seen(self, response: Any) -> None:
        if (
            response.url.startswith(f"{self.stack.provider.issuer}/token")
            and response.request.method == "POST"
        ):
            self.token_responses.append(response)

    def _asked(self, request: Any) -> None:
        if request.url.startswith(f"{self.stack.provider.issuer}/auth?"):
            self.authorize_urls.append(request.url)

    @staticmethod
    def _patched(route: Any, config: dict[str, Any]) -> None:
        response = route.fetch()
        body = response.json()
        body["auth"].update(config)
        route.fulfill(response=response, body=json.dumps(body))

    def tokens(self) -> list[dict[str, Any]]:
        """Every token response the provider sent this page, in order."""
        return [response.json() for response in self.token_responses]

    def log_in(self, login: str) -> None:
        """Fill the provider's login form (it appears when no provider session exists)."""
        self.page.wait_for_selector("input[name=login]", timeout=15000)
        self.page.fill("input[name=login]", login)
        self.page.fill("input[name=password]", "any password")
        self.page.click("button[type=submit]")

    def open(self, day: str, login: str) -> None:
        """Go to the board on ``day``, sign in as ``login``, wait until the board is live."""
        self.page.goto(f"{self.stack.board}/?date={day}")
        self.log_in(login)
        self.page.wait_for_selector("body[data-ready='true'][data-ws='live']", timeout=20000)

    def close(self) -> None:
        self.context.close()


def claims_of(jwt: str) -> dict[str, Any]:
    import base64

    payload = jwt.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.slow(seconds=23)
def test_sign_in_sync_audit_renewal_on_an_open_socket_and_sign_out(
    browser: Any, stack: Stack, simulator: Any, redis_client: Any
) -> None:
    day = clinic_weekday(54)
    count = len({str(appt["patient_id"]) for appt in simulator.appointments(day)})
    tab = Browsing(browser, stack)
    page = tab.page
    tab.open(day, "frontdesk-ana")

    # Back on the asked day, signed in as the provider says, with the controls a front desk has.
    assert page.input_value("#day") == day and urlsplit(page.url).query == f"date={day}"
    assert page.text_content("#who-name") == "frontdesk-ana"
    assert page.text_content("#who-role") == "front-desk"
    assert page.is_visible("#sync-now") and not page.is_visible("#breaker-fact")
    asked = parse_qs(urlsplit(tab.authorize_urls[0]).query)
    assert asked["code_challenge_method"] == ["S256"] and asked["audience"] == [stack.provider.audience]
    assert asked["resource"] == [stack.provider.audience] and asked["state"] and asked["nonce"]
    first = tab.tokens()[0]
    assert claims_of(first["access_token"])["aud"] == stack.provider.audience and first["refresh_token"]

    page.click("#sync-now")
    page.wait_for_selector(f"#board[data-date='{day}'][data-count='{count}']", timeout=20000)

    # A status change, audited under that user and role.
    card = page.locator(".card[data-status='scheduled']:has(.move:not([hidden]))").first
    hpid = card.get_attribute("data-hpid")
    target = flow.allowed_next("scheduled")[0]
    card.locator("select.next").select_option(target)
    page.wait_for_selector(f"section[data-column='{target}'] .card[data-hpid='{hpid}']")
    records = [
        fields for _, fields in redis_client.xrange("audit") if fields["action"] == "patients.status_change"
    ]
    assert [(r["sub"], r["role"], r["outcome"]) for r in records] == [("frontdesk-ana", "front-desk", "ok")]

    # The access token expires and is renewed (refresh-token rotation) while the socket stays open.
    first_exp = claims_of(first["access_token"])["exp"]
    page.wait_for_selector("body[data-renewals]", timeout=(ACCESS_TTL_S + 10) * 1000)
    while time.time() < first_exp + 2:  # past the first token's expiry (the relay would have closed 4401)
        page.wait_for_timeout(500)
    renewed = tab.tokens()[-1]
    assert renewed["access_token"] != first["access_token"]
    assert renewed["refresh_token"] != first["refresh_token"], "the refresh token rotated"
    assert page.get_attribute("body", "data-socket-opens") == "1", "the socket was never reopened"
    assert int(page.get_attribute("body", "data-socket-auths") or 0) >= 1, "the socket took the new token"
    assert page.get_attribute("body", "data-ws") == "live"
    # ...and keeps receiving events: a change made by someone else arrives on it.
    other = page.locator(".card[data-status='scheduled']:has(.move:not([hidden]))").first
    other_hpid = other.get_attribute("data-hpid")
    moved = requests.patch(
        f"{stack.board}/api/v1/patients/{other_hpid}/status?date={day}",
        json={"status": target},
        headers=bearer(renewed["access_token"]),
        timeout=10,
    )
    assert moved.status_code == 200, moved.text
    page.wait_for_selector(f"section[data-column='{target}'] .card[data-hpid='{other_hpid}']", timeout=5000)
    assert page.get_attribute("body", "data-socket-opens") == "1"

    # Sign out through the provider's end-session endpoint: back on a page that holds no token.
    issued = tab.tokens()  # (bodies are read before the page navigates away)
    page.click("#sign-out")
    page.click("button[name=logout][value=yes]", timeout=15000)  # the provider asks to confirm
    page.wait_for_selector("body[data-auth='signed-out']", timeout=15000)
    held = page.evaluate(
        "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage), document.cookie,"
        " document.documentElement.outerHTML])"
    )
    for response in issued:
        for name in ("access_token", "refresh_token", "id_token"):
            assert response[name] not in held, f"the page still holds the {name}"
    assert tab.context.cookies(stack.board) == []
    # The provider's session ended too: signing in again asks for the login.
    page.click("#gate-action")
    page.wait_for_selector("input[name=login]", timeout=15000)
    assert tab.errors == [], tab.errors
    tab.close()


def test_a_role_without_a_scope_sees_no_control_for_it_and_the_api_refuses_it(
    browser: Any, stack: Stack, simulator: Any, redis_client: Any
) -> None:
    day = clinic_weekday(54)
    count = len({str(appt["patient_id"]) for appt in simulator.appointments(day)})
    desk = Browsing(browser, stack)  # the front desk syncs the day
    desk.open(day, "frontdesk-al")
    desk.page.click("#sync-now")
    desk.page.wait_for_selector(f"#board[data-count='{count}']", timeout=20000)

    clinician = Browsing(browser, stack)
    clinician.open(day, "clinician-bo")
    page = clinician.page
    page.wait_for_selector(f"#board[data-count='{count}']")
    assert page.text_content("#who-role") == "clinician"
    assert not page.is_visible("#sync-now") and not page.is_visible("#breaker-fact")
    assert page.locator(".move:not([hidden])").count() > 0  # clinicians move patients
    token = clinician.tokens()[-1]["access_token"]
    refused = requests.post(
        f"{stack.board}/api/v1/schedule/sync?date={day}", headers=bearer(token), timeout=10
    )
    assert (
        refused.status_code == 403 and refused.json()["error"]["details"]["required_scope"] == "sync:schedule"
    )

    ops = Browsing(browser, stack)
    ops.open(day, "ops-cy")
    ops.page.wait_for_selector(f"#board[data-count='{count}']")
    assert ops.page.text_content("#who-role") == "ops"
    assert ops.page.is_visible("#breaker-fact") and not ops.page.is_visible("#sync-now")
    ops_token = ops.tokens()[-1]["access_token"]
    synced = requests.post(
        f"{stack.board}/api/v1/schedule/sync?date={day}", headers=bearer(ops_token), timeout=10
    )
    assert synced.status_code == 403
    # Ops reads the board but moves nobody: no status menu, and a PATCH is refused.
    assert ops.page.locator(".move:not([hidden])").count() == 0
    hpid = ops.page.locator(".card").first.get_attribute("data-hpid")
    patch = requests.patch(
        f"{stack.board}/api/v1/patients/{hpid}/status?date={day}",
        json={"status": "confirmed"},
        headers=bearer(ops_token),
        timeout=10,
    )
    assert patch.status_code == 403
    for tab in (desk, clinician, ops):
        assert tab.errors == [], tab.errors
        tab.close()


def test_an_answer_with_a_forged_state_ends_on_its_page(browser: Any, stack: Stack) -> None:
    tab = Browsing(browser, stack)
    tab.page.goto(f"{stack.board}/?code=stolen-code&state=forged")
    tab.page.wait_for_selector("body[data-auth='error'][data-auth-error='state']", timeout=15000)
    assert "does not belong to a sign-in started in this tab" in tab.page.text_content("#gate")
    assert tab.authorize_urls == [] and tab.token_responses == [], "nothing was sent to the provider"
    assert "code=" not in tab.page.url
    tab.close()


def test_refused_consent_ends_on_its_page(browser: Any, stack: Stack) -> None:
    tab = Browsing(browser, stack)
    tab.page.goto(f"{stack.board}/")
    tab.page.wait_for_selector("input[name=login]", timeout=15000)
    tab.page.click("text=[ Cancel ]")
    tab.page.wait_for_selector("body[data-auth='error'][data-auth-error='denied']", timeout=15000)
    assert "cancelled or refused" in tab.page.text_content("#gate")
    assert len(tab.authorize_urls) == 1, "no redirect loop"
    tab.close()


def test_a_replayed_code_is_refused_by_the_provider_and_ends_on_its_page(
    browser: Any, stack: Stack, redis_client: Any
) -> None:
    tab = Browsing(browser, stack)
    callbacks: list[str] = []
    exchanges: list[str] = []
    tab.page.on(
        "request",
        lambda r: callbacks.append(r.url) if "code=" in r.url and r.is_navigation_request() else None,
    )
    tab.page.on(
        "request", lambda r: exchanges.append(r.post_data or "") if r.url.endswith("/token") else None
    )
    tab.open(clinic_weekday(54), "frontdesk-di")
    # The same answer again, with the sign-in it belonged to put back as it was (the state, nonce and
    # verifier this tab sent): only the provider stands between a used code and a session now.
    authorize = parse_qs(urlsplit(tab.authorize_urls[0]).query)
    verifier = parse_qs(exchanges[0])["code_verifier"][0]
    pending = {
        "state": authorize["state"][0],
        "nonce": authorize["nonce"][0],
        "verifier": verifier,
        "date": None,
    }
    tab.page.evaluate("(p) => sessionStorage.setItem('relay.signin.pending', JSON.stringify(p))", pending)
    tab.page.goto(callbacks[0])
    tab.page.wait_for_selector("body[data-auth='error'][data-auth-error='code']", timeout=15000)
    assert "already used or has expired" in tab.page.text_content("#gate")
    tab.close()


def test_a_token_for_another_audience_ends_on_its_page_without_a_loop(browser: Any, stack: Stack) -> None:
    # This board asks the provider for another API's audience: the API refuses the token it gets.
    tab = Browsing(browser, stack, config={"audience": stack.provider.other_audience})
    tab.page.goto(f"{stack.board}/?date={clinic_weekday(54)}")
    tab.log_in("frontdesk-ed")
    tab.page.wait_for_selector("body[data-auth='error'][data-auth-error='rejected']", timeout=20000)
    assert "issuer, audience" in tab.page.text_content("#gate")
    assert claims_of(tab.tokens()[0]["access_token"])["aud"] != stack.provider.audience
    tab.page.wait_for_timeout(1000)
    assert len(tab.authorize_urls) == 1, "no redirect loop"
    tab.close()


def test_an_id_token_from_another_issuer_ends_on_its_page(browser: Any, stack: Stack) -> None:
    tab = Browsing(browser, stack, config={"issuer": "https://idp.elsewhere.example/"})
    tab.page.goto(f"{stack.board}/")
    tab.log_in("frontdesk-fa")
    tab.page.wait_for_selector("body[data-auth='error'][data-auth-error='token']", timeout=15000)
    assert "another identity provider" in tab.page.text_content("#gate")
    tab.close()


@pytest.mark.slow(seconds=15)
def test_an_expired_session_ends_on_its_page_and_signs_in_back_to_the_day(browser: Any, stack: Stack) -> None:
    # This board signs in with the provider's second client, whose refresh tokens last 1 s.
    day = clinic_weekday(54)
    tab = Browsing(browser, stack, config={"client_id": stack.provider.short_client_id})
    tab.open(day, "frontdesk-gu")
    tab.page.wait_for_selector(
        "body[data-auth='error'][data-auth-error='session']", timeout=(ACCESS_TTL_S + 10) * 1000
    )
    assert "session has ended" in tab.page.text_content("#gate")
    assert tab.page.get_attribute("body", "data-ws") != "live" or tab.page.is_hidden("#board")
    tab.page.click("#gate-action")  # the provider's session still holds: straight back to the same day
    tab.page.wait_for_selector(f"body[data-ready='true'] #board[data-date='{day}']", timeout=20000)
    assert tab.page.input_value("#day") == day
    tab.close()


@pytest.mark.slow(seconds=15)
def test_without_a_refresh_token_the_board_renews_with_prompt_none_back_to_the_same_day(
    browser: Any, stack: Stack
) -> None:
    # This board signs in with the provider's third client, which may not use refresh tokens.
    day = clinic_weekday(54)
    tab = Browsing(browser, stack, config={"client_id": stack.provider.no_refresh_client_id})
    tab.open(day, "clinician-hu")
    assert "refresh_token" not in tab.tokens()[0]
    # Two thirds into the token's life the page goes through the provider without a form and comes back.
    deadline = time.monotonic() + ACCESS_TTL_S + 20
    while len(tab.token_responses) < 2:  # the second code exchange: the page is back from the provider
        assert time.monotonic() < deadline, "the board did not renew"
        tab.page.wait_for_timeout(250)
    tab.page.wait_for_selector(
        f"body[data-ready='true'][data-ws='live'] #board[data-date='{day}']", timeout=20000
    )
    assert parse_qs(urlsplit(tab.authorize_urls[1]).query)["prompt"] == ["none"]
    assert len(tab.token_responses) == 2 and tab.page.input_value("#day") == day
    assert tab.errors == [], tab.errors
    tab.close()


def test_the_page_allows_only_the_issuers_origin_and_serves_no_dev_token(stack: Stack) -> None:
    policy = requests.get(f"{stack.board}/", timeout=5).headers["Content-Security-Policy"]
    assert f"connect-src 'self' {stack.provider.issuer} " in policy and "unsafe-inline" not in policy
    assert "frame-src" not in policy and "form-action 'none'" in policy
    assert requests.get(f"{stack.board}/dev/token", timeout=5).status_code == 404
    config = requests.get(f"{stack.board}/board/config", timeout=5).json()["auth"]
    assert config["token_endpoint"] == f"{stack.provider.issuer}/token"
    assert config["authorization_endpoint"] == f"{stack.provider.issuer}/auth"
