// Sign-in with the clinic's identity provider: OAuth 2.0 Authorization Code + PKCE (S256), OpenID Connect.
// Plain JavaScript, no build step: WebCrypto makes the PKCE challenge. The board (board.js) uses it through
// window.RelaySignIn; docs/security.md ("Sign-in with the clinic's identity provider") is the contract.
//
// What is kept where:
// - tokens (access, refresh, ID): in this script's memory only, never in localStorage, sessionStorage or a
//   cookie: a reload signs in again (silently while the provider's session lasts);
// - the sign-in in progress (state, nonce, PKCE verifier, the day to come back to): in sessionStorage, this
//   tab only, for the round trip through the provider, and removed as soon as the answer arrives, so an
//   answer (its `code`) can never be used twice from here.
"use strict";

(function () {
  const PENDING_KEY = "relay.signin.pending";
  const ATTEMPTS_KEY = "relay.signin.attempts";
  const MAX_ATTEMPTS = 3; // sign-ins started in ATTEMPT_WINDOW_MS without the board ever loading: a loop
  const ATTEMPT_WINDOW_MS = 120000;
  const SKEW_S = 30; // clock skew allowed when checking the ID token's exp

  class SignInError extends Error {
    // kind: "denied", "state", "code", "token", "session", "config", "provider" (the page's data-auth-error)
    constructor(kind, message) {
      super(message);
      this.kind = kind;
    }
  }

  function base64url(bytes) {
    let text = "";
    new Uint8Array(bytes).forEach((b) => { text += String.fromCharCode(b); });
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function randomString() {
    return base64url(crypto.getRandomValues(new Uint8Array(32)));
  }

  async function challengeOf(verifier) {
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
    return base64url(digest);
  }

  // The claims of a JWT, unverified: used for the ID token (checked below, received straight from the
  // token endpoint over TLS, OpenID Connect Core 3.1.3.7) and to show what the access token allows (the
  // API verifies it and refuses anyway what the page merely hides).
  function claimsOf(jwt) {
    try {
      const part = String(jwt).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const json = decodeURIComponent(
        Array.from(atob(part), (c) => `%${c.charCodeAt(0).toString(16).padStart(2, "0")}`).join(""),
      );
      return JSON.parse(json);
    } catch (err) {
      return null;
    }
  }

  function redirectUri() {
    return `${window.location.origin}/`;
  }

  function audienceParams(auth, params) {
    // Auth0 names the API with `audience`; RFC 8707 providers with `resource`. Each ignores the other's.
    (auth.audience_params || []).forEach((name) => params.set(name, auth.audience));
  }

  // -- starting a sign-in ---------------------------------------------------------------------------------

  function countAttempt() {
    let seen = { n: 0, since: Date.now() };
    try {
      seen = JSON.parse(sessionStorage.getItem(ATTEMPTS_KEY)) || seen;
    } catch (err) {
      // a damaged entry counts as none
    }
    if (Date.now() - seen.since > ATTEMPT_WINDOW_MS) seen = { n: 0, since: Date.now() };
    seen.n += 1;
    sessionStorage.setItem(ATTEMPTS_KEY, JSON.stringify(seen));
    return seen.n;
  }

  function boardLoaded() {
    sessionStorage.removeItem(ATTEMPTS_KEY); // the sign-in worked: the loop guard starts over
  }

  async function begin(auth, date, prompt) {
    if (countAttempt() > MAX_ATTEMPTS) {
      throw new SignInError("loop", "Signing in keeps failing: the board stopped trying so as not to loop.");
    }
    const pending = { state: randomString(), nonce: randomString(), verifier: randomString(), date };
    sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
    const params = new URLSearchParams({
      response_type: "code",
      client_id: auth.client_id,
      redirect_uri: redirectUri(),
      scope: auth.scope,
      state: pending.state,
      nonce: pending.nonce,
      code_challenge: await challengeOf(pending.verifier),
      code_challenge_method: "S256",
    });
    audienceParams(auth, params);
    if (prompt) params.set("prompt", prompt);
    window.location.assign(`${auth.authorization_endpoint}?${params}`);
  }

  // -- the provider's answer ------------------------------------------------------------------------------

  function isCallback() {
    const query = new URLSearchParams(window.location.search);
    return query.has("state") && (query.has("code") || query.has("error"));
  }

  function takePending() {
    const raw = sessionStorage.getItem(PENDING_KEY);
    sessionStorage.removeItem(PENDING_KEY); // one answer per sign-in, whatever it holds
    try {
      return raw ? JSON.parse(raw) : null;
    } catch (err) {
      return null;
    }
  }

  async function complete(auth) {
    const query = new URLSearchParams(window.location.search);
    const pending = takePending();
    window.history.replaceState(null, "", "/"); // the code leaves the address bar and the history
    if (!pending || query.get("state") !== pending.state) {
      throw new SignInError(
        "state",
        "This sign-in answer does not belong to a sign-in started in this tab: it was already used, or it is stale.",
      );
    }
    if (query.has("error")) {
      const error = query.get("error");
      if (error === "access_denied") {
        throw new SignInError("denied", "Sign-in was cancelled or refused at the identity provider.");
      }
      if (["login_required", "interaction_required", "consent_required"].includes(error)) {
        throw new SignInError("session", "Your session has ended. Sign in again to carry on.");
      }
      throw new SignInError("provider", `The identity provider could not sign you in (${error}).`);
    }
    if (query.has("iss") && query.get("iss") !== auth.issuer) {
      throw new SignInError("token", "The sign-in answer came from another identity provider.");
    }
    const body = new URLSearchParams({
      grant_type: "authorization_code",
      code: query.get("code"),
      redirect_uri: redirectUri(),
      client_id: auth.client_id,
      code_verifier: pending.verifier,
    });
    audienceParams(auth, body);
    const session = await tokenRequest(auth, body, "code");
    checkIdToken(auth, session.idToken, pending.nonce);
    return { session, date: pending.date };
  }

  async function tokenRequest(auth, body, kind) {
    let response;
    try {
      response = await fetch(auth.token_endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
        body,
        cache: "no-store",
        credentials: "omit",
      });
    } catch (err) {
      throw new SignInError("provider", "The identity provider could not be reached.");
    }
    let payload = {};
    try {
      payload = await response.json();
    } catch (err) {
      payload = {};
    }
    if (!response.ok || !payload.access_token) {
      const error = payload.error || `HTTP ${response.status}`;
      if (kind === "refresh") {
        throw new SignInError("session", "Your session has ended. Sign in again to carry on.");
      }
      throw new SignInError(
        "code",
        `The identity provider refused this sign-in (${error}): its code was already used or has expired.`,
      );
    }
    return {
      accessToken: payload.access_token,
      refreshToken: payload.refresh_token || null,
      idToken: payload.id_token || null,
      expiresAt: Date.now() + 1000 * Number(payload.expires_in || 300),
      lifetimeMs: 1000 * Number(payload.expires_in || 300),
      obtainedAt: Date.now(),
    };
  }

  function checkIdToken(auth, idToken, nonce) {
    const claims = claimsOf(idToken);
    if (!claims) throw new SignInError("token", "The identity provider sent no usable ID token.");
    const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (claims.iss !== auth.issuer) {
      throw new SignInError("token", "The ID token was issued by another identity provider.");
    }
    if (!audiences.includes(auth.client_id)) {
      throw new SignInError("token", "The ID token was issued for another application.");
    }
    if (claims.nonce !== nonce) {
      throw new SignInError("token", "The ID token does not answer this sign-in (nonce).");
    }
    if (!(Number(claims.exp) + SKEW_S > Date.now() / 1000)) {
      throw new SignInError("token", "The ID token has expired.");
    }
  }

  // -- renewal and sign-out -------------------------------------------------------------------------------

  async function refresh(auth, session) {
    if (!session.refreshToken) throw new SignInError("session", "Your session has ended. Sign in again to carry on.");
    const body = new URLSearchParams({
      grant_type: "refresh_token",
      refresh_token: session.refreshToken,
      client_id: auth.client_id,
    });
    audienceParams(auth, body);
    const renewed = await tokenRequest(auth, body, "refresh");
    // Rotation: the provider's new refresh token replaces the old one (which it no longer honours).
    renewed.refreshToken = renewed.refreshToken || session.refreshToken;
    renewed.idToken = renewed.idToken || session.idToken;
    return renewed;
  }

  function signOut(auth, session) {
    const target = `${window.location.origin}/?signed_out=1`;
    if (!auth.end_session_endpoint) {
      window.location.assign(target);
      return;
    }
    const params = new URLSearchParams({ client_id: auth.client_id, post_logout_redirect_uri: target });
    if (session && session.idToken) params.set("id_token_hint", session.idToken);
    window.location.assign(`${auth.end_session_endpoint}?${params}`);
  }

  // -- who is signed in, and what they may do ---------------------------------------------------------------

  function claimAt(claims, name) {
    if (name in claims) return claims[name];
    return name.split(".").reduce((value, part) => (value && typeof value === "object" ? value[part] : undefined), claims);
  }

  function rolesOf(auth, accessToken) {
    const claims = claimsOf(accessToken) || {};
    let roles = claimAt(claims, auth.role_claim || "roles");
    if (typeof roles === "string") roles = [roles];
    return Array.isArray(roles) ? roles.filter((role) => typeof role === "string") : [];
  }

  function scopesOf(auth, accessToken) {
    const claims = claimsOf(accessToken) || {};
    const scopes = new Set(typeof claims.scope === "string" ? claims.scope.split(" ") : []);
    (Array.isArray(claims.permissions) ? claims.permissions : []).forEach((item) => scopes.add(item));
    rolesOf(auth, accessToken).forEach((role) => ((auth.roles || {})[role] || []).forEach((s) => scopes.add(s)));
    scopes.delete("");
    return scopes;
  }

  function userOf(session) {
    const claims = claimsOf(session.idToken) || claimsOf(session.accessToken) || {};
    return claims.name || claims.email || claims.preferred_username || claims.sub || "signed in";
  }

  window.RelaySignIn = {
    SignInError, begin, isCallback, complete, refresh, signOut, boardLoaded, rolesOf, scopesOf, userOf,
  };
})();
