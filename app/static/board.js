// The live patient-flow board: REST for the day's state, /ws for every change after it (docs/board.md).
// Plain JavaScript, no build step, no framework; no inline code or styles anywhere (the page's CSP).
// Sign-in (AUTH_MODE=oidc) is signin.js; in development the page fetches its own token from /dev/token.
"use strict";

(function () {
  const API = "/api/v1";
  const SignIn = window.RelaySignIn;
  const FRESH_TOKEN_MS = 30000; // a token this young refused by the API: signing in again will not help
  const RENEW_FLOOR_MS = 5000;
  const RETRY_RENEW_MS = 5000; // a renewal the provider did not answer is tried again this much later
  const RECONNECT_MIN_MS = 500;
  const RECONNECT_MAX_MS = 10000;
  const ENDED = new Set(["cancelled", "no-show", "rescheduled"]);
  const STAMP_ON_ENTRY = { arrived: "checkin_time", "with-doctor": "with_doctor_time", completed: "completed_time" };

  const state = {
    config: null, // /board/config: clinic_tz, today, states, next, dev_token, auth
    token: null, // the access token (memory only)
    session: null, // oidc: {accessToken, refreshToken, idToken, expiresAt, lifetimeMs, obtainedAt}
    scopes: new Set(), // what the token allows: controls it does not allow are hidden
    renewing: null, // the renewal in flight (one at a time)
    renewTimer: null,
    renewals: 0,
    date: null,
    rows: new Map(), // hpid -> board entry
    lastEventId: null, // the newest stream id the socket delivered: a reconnect asks for what came after it
    boardEventId: null, // the newest stream id when the board was last read (GET /patients last_event_id)
    socket: null,
    subscribedDate: null,
    reconnectMs: RECONNECT_MIN_MS,
    loading: null, // the board fetch in flight; events arriving meanwhile wait in `held`
    held: [],
  };

  const $ = (id) => document.getElementById(id);

  // -- small helpers ------------------------------------------------------------------------------------

  function notice(text, isError) {
    if (text && !$("gate").hidden) return; // a sign-in page is showing: it says what matters
    const el = $("notice");
    el.textContent = text || "";
    el.hidden = !text;
    el.classList.toggle("error", Boolean(isError));
  }

  function setFact(id, text, stateClass) {
    const el = $(id);
    el.textContent = text;
    el.className = stateClass ? `state-${stateClass}` : "";
  }

  function clock(iso) {
    if (!iso) return "";
    const when = new Date(iso);
    if (Number.isNaN(when.getTime())) return "";
    return new Intl.DateTimeFormat(undefined, {
      hour: "2-digit", minute: "2-digit", timeZone: state.config.clinic_tz,
    }).format(when);
  }

  function waitText(row) {
    if (!row.checkin_time) return "";
    const start = Date.parse(row.checkin_time);
    const endIso = row.with_doctor_time || row.completed_time;
    const end = endIso ? Date.parse(endIso) : Date.now();
    const minutes = Math.max(0, Math.round((end - start) / 60000));
    return `waited ${minutes} min`;
  }

  function streamKey(id) {
    const [ms, seq] = String(id).split("-");
    return [Number(ms), Number(seq || 0)];
  }

  function newer(a, b) {
    if (!b) return true;
    const [am, as] = streamKey(a);
    const [bm, bs] = streamKey(b);
    return am > bm || (am === bm && as > bs);
  }

  // -- the API --------------------------------------------------------------------------------------------

  async function fetchToken() {
    state.token = null;
    if (!state.config.dev_token) return; // no development token here: calls go without one
    const response = await fetch("/dev/token", { cache: "no-store" });
    if (response.ok) state.token = (await response.json()).token;
    state.scopes = state.token ? SignIn.scopesOf(state.config.auth, state.token) : new Set();
  }

  async function api(method, path, body, headers) {
    for (let attempt = 0; attempt < 2; attempt += 1) {
      const init = { method, cache: "no-store", headers: { Accept: "application/json", ...(headers || {}) } };
      if (state.token) init.headers.Authorization = `Bearer ${state.token}`;
      if (body !== undefined) {
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      const response = await fetch(API + path, init);
      let payload = null;
      try {
        payload = await response.json();
      } catch (err) {
        payload = null;
      }
      if (response.status === 401 && attempt === 0 && state.config.dev_token) {
        await fetchToken(); // expired: one fresh token, one retry
        continue;
      }
      if (response.status === 401 && attempt === 0 && signingIn()) {
        if (await recoverFrom401(payload)) continue; // renewed: one retry
        return { status: 401, ok: false, payload, handled: true };
      }
      return { status: response.status, ok: response.ok, payload };
    }
    return { status: 401, ok: false, payload: null };
  }

  // -- sign-in (AUTH_MODE=oidc) -----------------------------------------------------------------------------

  function signingIn() {
    return Boolean(state.config && state.config.auth && state.config.auth.mode === "oidc");
  }

  // A 401: renew and retry; a token just issued that the API refuses ends on a page (no loop); without a
  // way to renew, sign in again and come back to this day. True: renewed, retry the call.
  async function recoverFrom401(payload) {
    const session = state.session;
    const message = payload && payload.error ? payload.error.message : "The API refused the token.";
    if (session && Date.now() - session.obtainedAt < FRESH_TOKEN_MS) {
      gate("error", "rejected", "The API does not accept this sign-in",
        `${message} Ask whoever runs Clinic Relay to check OIDC_ISSUER and OIDC_AUDIENCE.`, "Sign in again");
      return false;
    }
    return renew();
  }

  function adopt(session) {
    state.session = session;
    state.token = session.accessToken;
    state.scopes = SignIn.scopesOf(state.config.auth, session.accessToken);
    const socket = state.socket;
    if (socket && socket.readyState === WebSocket.OPEN) {
      // The open socket takes the new token; it stays open and keeps its subscriptions.
      socket.send(JSON.stringify({ type: "auth", token: session.accessToken }));
    }
    window.clearTimeout(state.renewTimer);
    // Renew when two thirds of the token's life have passed, or a minute before it expires if sooner.
    const lead = Math.min(60000, session.lifetimeMs / 3);
    const delay = Math.max(RENEW_FLOOR_MS, session.expiresAt - lead - Date.now());
    state.renewTimer = window.setTimeout(renew, delay);
  }

  // One renewal at a time; true when a fresh token is in place. Without a refresh token the page signs in
  // again through the provider (prompt=none: no form while the provider's session lasts).
  function renew() {
    if (state.renewing) return state.renewing;
    state.renewing = (async () => {
      try {
        if (!state.session || !state.session.refreshToken) {
          await SignIn.begin(state.config.auth, state.date, "none");
          return false;
        }
        adopt(await SignIn.refresh(state.config.auth, state.session));
        state.renewals += 1;
        document.body.dataset.renewals = String(state.renewals);
        return true;
      } catch (err) {
        if (err.kind === "provider" && state.session && state.session.expiresAt - Date.now() > RETRY_RENEW_MS) {
          // The provider did not answer, and the token still has time: try again shortly, keep working.
          window.clearTimeout(state.renewTimer);
          state.renewTimer = window.setTimeout(renew, RETRY_RENEW_MS);
          return false;
        }
        failSignIn(err);
        return false;
      } finally {
        state.renewing = null;
      }
    })();
    return state.renewing;
  }

  function failSignIn(err) {
    forget();
    const kind = err && err.kind ? err.kind : "provider";
    const titles = {
      denied: "Sign-in was cancelled",
      state: "This sign-in link cannot be used",
      code: "The sign-in did not go through",
      token: "The sign-in answer was not accepted",
      session: "Your session has ended",
      loop: "Signing in keeps failing",
      config: "Sign-in is unavailable",
      provider: "The identity provider did not sign you in",
    };
    gate("error", kind, titles[kind] || titles.provider, String(err && err.message ? err.message : err), "Sign in again");
  }

  function forget() {
    window.clearTimeout(state.renewTimer);
    state.session = null;
    state.token = null;
    state.scopes = new Set();
    if (state.socket) {
      const socket = state.socket;
      state.socket = null; // no reconnect
      socket.close(1000, "signed out");
    }
  }

  // A page instead of the board: signed out, or an error. Its one button starts a sign-in back to this day.
  function gate(authState, kind, title, message, action) {
    document.body.dataset.auth = authState;
    if (kind) document.body.dataset.authError = kind;
    $("gate-title").textContent = title;
    $("gate-message").textContent = message;
    const button = $("gate-action");
    button.textContent = action;
    button.hidden = !action || !signingIn();
    $("gate").hidden = false;
    $("board").hidden = true;
    $("who").hidden = true;
    $("sync-now").hidden = true;
    notice("");
    button.focus();
  }

  function startSignIn() {
    SignIn.begin(state.config.auth, state.date).catch(failSignIn);
  }

  function signOut() {
    const session = state.session;
    forget();
    document.body.dataset.auth = "signing-out";
    SignIn.signOut(state.config.auth, session);
  }

  function showWho() {
    if (!signingIn() || !state.session) return;
    const roles = SignIn.rolesOf(state.config.auth, state.session.accessToken);
    $("who-name").textContent = SignIn.userOf(state.session);
    $("who-role").textContent = roles.length ? roles.join(", ") : "no role";
    $("who").hidden = false;
  }

  function may(scope) {
    return state.scopes.has(scope);
  }

  function showControls() {
    $("sync-now").hidden = !may("sync:schedule");
    $("breaker-fact").hidden = !may("ops:breaker");
  }

  // Signs in (or finishes a sign-in) and says which day to show; null when the page navigates away or
  // shows a sign-in page instead of the board.
  async function signIn(asked) {
    const auth = state.config.auth;
    const query = new URLSearchParams(window.location.search);
    if (query.has("signed_out")) {
      window.history.replaceState(null, "", "/");
      gate("signed-out", "", "You have signed out", "Nobody is signed in to the board in this tab.", "Sign in");
      return null;
    }
    if (!SignIn.isCallback()) {
      await SignIn.begin(auth, asked);
      return null;
    }
    const { session, date } = await SignIn.complete(auth);
    adopt(session);
    document.body.dataset.auth = "signed-in";
    return date;
  }

  async function loadBoard() {
    const date = state.date;
    const pending = api("GET", `/patients?date=${date}`);
    state.loading = pending;
    const result = await pending;
    if (state.loading === pending) state.loading = null;
    if (date !== state.date) return; // the day changed meanwhile
    if (!result.ok) {
      notice(errorText(result, "The board could not be loaded"), true);
      return;
    }
    state.rows = new Map(result.payload.data.map((row) => [row.hpid, row]));
    // The read names the newest event at its instant: subscribing from there misses nothing after it.
    state.boardEventId = result.payload.last_event_id;
    const held = state.held;
    state.held = [];
    held.forEach(applyEvent); // changes that arrived while the board was in flight (old versions drop out)
    render();
  }

  async function loadSyncStatus() {
    const result = await api("GET", `/schedule/status/${state.date}`);
    if (result.status === 404) {
      setFact("last-sync", "never");
    } else if (result.ok) {
      const sync = result.payload.data;
      const when = clock(sync.finished_at || sync.started_at || sync.requested_at);
      setFact("last-sync", `${when} ${sync.state}`.trim(), sync.state === "failed" ? "open" : "");
    }
  }

  async function loadBreaker() {
    const result = await api("GET", "/ops/breaker");
    if (result.ok && result.payload && result.payload.data) {
      showBreaker(result.payload.data.state);
    } else {
      setFact("breaker", "unknown");
    }
  }

  function showBreaker(value) {
    const name = String(value || "unknown");
    setFact("breaker", name, name.startsWith("half") ? "half" : name);
  }

  function errorText(result, fallback) {
    const error = result.payload && result.payload.error;
    return error ? `${fallback}: ${error.message}` : `${fallback} (HTTP ${result.status}).`;
  }

  async function syncNow() {
    const button = $("sync-now");
    button.disabled = true;
    const result = await api("POST", `/schedule/sync?date=${state.date}`);
    button.disabled = false;
    if (!result.ok) {
      notice(errorText(result, "The sync was not queued"), true);
      return;
    }
    notice("");
    setFact("last-sync", result.payload.data.status, "");
  }

  async function move(hpid, status, room) {
    const row = state.rows.get(hpid);
    if (!row) return;
    const body = { status, version: row.version };
    if (room !== null && room !== row.room) body.room = room;
    const result = await api("PATCH", `/patients/${hpid}/status?date=${state.date}`, body);
    if (result.ok) {
      notice("");
      applyChange(result.payload.data, result.payload.timestamp);
      render();
    } else {
      notice(errorText(result, "Not moved"), true);
      loadBoard(); // someone else got there first: show what is true now
    }
  }

  // -- events -----------------------------------------------------------------------------------------------

  function topics(date) {
    const names = [`schedule:${date}`, `patients:${date}`];
    if (may("ops:breaker")) names.push("ops"); // a socket may subscribe only to what its scopes read
    return names;
  }

  function connect() {
    document.body.dataset.socketOpens = String(Number(document.body.dataset.socketOpens || 0) + 1);
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${window.location.host}/ws`);
    state.socket = socket;
    state.subscribedDate = null;
    showLive("connecting");
    socket.addEventListener("open", () => {
      if (state.token) socket.send(JSON.stringify({ type: "auth", token: state.token }));
      subscribe(socket, state.date, state.lastEventId || state.boardEventId);
    });
    socket.addEventListener("message", (message) => onMessage(socket, message));
    socket.addEventListener("close", (closed) => onClose(socket, closed));
  }

  function subscribe(socket, date, since) {
    const message = { type: "subscribe", topics: topics(date) };
    if (since) message.since = since;
    state.subscribedDate = date;
    socket.send(JSON.stringify(message));
  }

  function onMessage(socket, message) {
    if (socket !== state.socket) return;
    let event;
    try {
      event = JSON.parse(message.data);
    } catch (err) {
      return;
    }
    if (event.type === "subscribed") {
      state.reconnectMs = RECONNECT_MIN_MS;
      showLive("live");
      if (event.replay_gap) loadBoard(); // the stream no longer holds everything missed: refetch
      return;
    }
    if (event.type === "error") {
      notice(`Live updates: ${event.error.message}`, true);
      return;
    }
    if (event.type === "authenticated") {
      document.body.dataset.socketAuths = String(Number(document.body.dataset.socketAuths || 0) + 1);
      return;
    }
    if (!event.id || !event.data) return; // authenticated, unsubscribed, pong
    if (newer(event.id, state.lastEventId)) state.lastEventId = event.id;
    document.body.dataset.lastEvent = event.id;
    onEvent(event);
  }

  function onEvent(event) {
    const data = event.data;
    if (event.type === "breaker_state_changed") {
      showBreaker(data.to || data.state);
      return;
    }
    if (data.date !== state.date) return;
    switch (event.type) {
      case "patient_status_changed":
        if (state.loading) {
          state.held.push(event);
        } else {
          applyEvent(event);
          render();
        }
        break;
      case "schedule_sync_started":
        setFact("last-sync", "running", "half");
        break;
      case "schedule_synced":
        loadBoard();
        loadSyncStatus();
        break;
      case "patient_details_updated":
        reloadSoon(); // dates of birth arrive one patient at a time after a sync: one read for a burst
        break;
      case "patient_removed": // no appointment left today in Tebra (moved away or deleted)
        if (state.rows.delete(data.hpid)) render();
        break;
      case "patient_conflict": // Tebra moved, cancelled or deleted a visit the clinic has under way
        if (state.rows.has(data.hpid)) {
          state.rows.get(data.hpid).tebra_conflict = data.conflict;
          render();
        } else {
          reloadSoon();
        }
        break;
      case "schedule_sync_failed":
      case "schedule_sync_deferred":
        loadSyncStatus();
        break;
      default:
        break;
    }
  }

  let reloadTimer = null;
  function reloadSoon() {
    if (reloadTimer) return;
    reloadTimer = window.setTimeout(() => {
      reloadTimer = null;
      loadBoard();
    }, 500);
  }

  function applyEvent(event) {
    if (!state.rows.has(event.data.hpid)) {
      loadBoard(); // a patient this board has not seen: the day changed under it
      return;
    }
    applyChange(event.data, event.ts);
  }

  function applyChange(change, ts) {
    const row = state.rows.get(change.hpid);
    if (!row || change.version <= row.version) return; // already shown (a replay, or our own PATCH)
    const stamp = STAMP_ON_ENTRY[change.status];
    if (stamp && change.status !== row.status) row[stamp] = ts;
    row.status = change.status;
    row.version = change.version;
    row.room = change.room;
    row.allowed_next = state.config.next[change.status] || [];
    row.flash = true;
  }

  function onClose(socket, closed) {
    if (socket !== state.socket) return;
    showLive("offline");
    const retry = async () => {
      if (closed.code === 4401 && state.config.dev_token) await fetchToken();
      if (closed.code === 4401 && signingIn() && !(await renew())) return; // renew() showed what is next
      if (socket === state.socket) connect();
    };
    window.setTimeout(retry, state.reconnectMs);
    state.reconnectMs = Math.min(RECONNECT_MAX_MS, state.reconnectMs * 2);
  }

  function showLive(value) {
    document.body.dataset.ws = value;
    setFact("live", value, value);
  }

  async function changeDay(date) {
    if (!date || date === state.date) return;
    const previous = state.date;
    state.date = date;
    const url = new URL(window.location.href);
    url.searchParams.set("date", date);
    window.history.replaceState(null, "", url);
    state.rows = new Map();
    render();
    await Promise.all([loadBoard(), loadSyncStatus()]);
    const socket = state.socket;
    if (date === state.date && socket && socket.readyState === WebSocket.OPEN) {
      // The new day's topics replay from this board's read; the old day's stop.
      socket.send(JSON.stringify({ type: "unsubscribe", topics: [`schedule:${previous}`, `patients:${previous}`] }));
      subscribe(socket, date, state.boardEventId);
    }
  }

  // -- rendering --------------------------------------------------------------------------------------------

  // Which control had the keyboard focus (card and control), so a re-render puts it back: events arrive all
  // day, and a front desk working by keyboard must not lose their place to one.
  function focusedControl() {
    const active = document.activeElement;
    const node = active && active.closest ? active.closest(".card") : null;
    if (!node) return null;
    const cls = active.classList.contains("room-input") ? "room-input" : "next";
    return { hpid: node.dataset.hpid, cls, value: active.value }; // what was chosen or typed, not yet sent
  }

  function restoreFocus(focused) {
    if (!focused) return;
    const node = document.querySelector(`.card[data-hpid="${CSS.escape(focused.hpid)}"] .${focused.cls}`);
    if (!node || node.disabled || node.closest("[hidden]")) return;
    if (node.tagName !== "SELECT" || Array.from(node.options).some((o) => o.value === focused.value)) {
      node.value = focused.value;
    }
    node.focus();
  }

  function render() {
    const focused = focusedControl();
    const board = $("board");
    const columns = state.config.states.map((status) => column(status));
    const rows = [...state.rows.values()].sort(
      (a, b) => a.appointment_time.localeCompare(b.appointment_time) || a.hpid.localeCompare(b.hpid),
    );
    const byStatus = new Map(columns.map((col) => [col.dataset.column, col]));
    rows.forEach((row) => {
      const col = byStatus.get(row.status);
      if (col) col.appendChild(card(row));
    });
    columns.forEach((col) => {
      col.querySelector(".count").textContent = String(col.querySelectorAll(".card").length);
    });
    // The ended states (no controls, few cards) share one column, one above the other.
    const ended = document.createElement("div");
    ended.className = "ended-stack";
    ended.append(...columns.filter((col) => ENDED.has(col.dataset.column)));
    board.replaceChildren(...columns.filter((col) => !ENDED.has(col.dataset.column)), ended);
    restoreFocus(focused);
    $("patient-count").textContent = String(state.rows.size);
    board.dataset.date = state.date;
    board.dataset.count = String(state.rows.size);
  }

  function column(status) {
    const section = document.createElement("section");
    section.className = ENDED.has(status) ? "column ended" : "column";
    section.dataset.column = status;
    const title = document.createElement("h2");
    const name = document.createElement("span");
    // A soft hyphen lets the longest title break ("re-scheduled") where a narrow column needs it.
    name.textContent = status.replace(/-/g, " ").replace(/^rescheduled$/, "re\u00adscheduled");
    const count = document.createElement("span");
    count.className = "count";
    title.append(name, count);
    section.appendChild(title);
    return section;
  }

  function card(row) {
    const node = $("card-template").content.firstElementChild.cloneNode(true);
    node.dataset.hpid = row.hpid;
    node.dataset.status = row.status;
    node.dataset.version = String(row.version);
    if (row.flash) {
      node.classList.add("flash");
      row.flash = false;
    }
    if (row.tebra_conflict) node.classList.add("conflict"); // until the clinic's next change resolves it
    node.querySelector(".name").textContent = row.name || "(name pending)";
    node.querySelector(".time").textContent = clock(row.appointment_time);
    node.querySelector(".provider").textContent = row.provider;
    node.querySelector(".meta").textContent = metaText(row);
    const roomInput = node.querySelector(".room-input");
    roomInput.value = row.room || "";
    roomInput.setAttribute("aria-label", `Room of ${row.name || "this patient"}`);
    const select = node.querySelector(".next");
    select.setAttribute("aria-label", `Move ${row.name || "this patient"} to`);
    const next = row.allowed_next || state.config.next[row.status] || [];
    select.add(new Option("Move to…", "", true, true));
    next.forEach((status) => select.add(new Option(status.replace(/-/g, " "), status)));
    select.disabled = next.length === 0;
    // A visit that has ended has nothing to move; without write:patients there is no menu at all.
    node.querySelector(".move").hidden = next.length === 0 || !may("write:patients");
    // Keyboard: arrow keys on a closed menu change its value (and fire "change") as they browse, so a move
    // made by keyboard waits for Enter; a pointer choice moves at once.
    let keyed = false;
    select.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && select.value) {
        event.preventDefault();
        move(row.hpid, select.value, roomInput.value.trim());
      } else if (event.key === "Escape") {
        select.value = "";
      } else if (event.key !== "Tab") {
        keyed = true;
      }
    });
    select.addEventListener("pointerdown", () => { keyed = false; });
    select.addEventListener("change", () => {
      if (select.value && !keyed) move(row.hpid, select.value, roomInput.value.trim());
    });
    // Enter in the room field saves the room alone (same status: a room change).
    roomInput.addEventListener("keydown", (event) => {
      if (event.key !== "Enter") return;
      event.preventDefault();
      const room = roomInput.value.trim();
      if (room !== (row.room || "")) move(row.hpid, row.status, room);
    });
    return node;
  }

  // [ and ] step the day back and forward (not while typing in a field).
  function onShortcut(event) {
    if (event.altKey || event.ctrlKey || event.metaKey || !["[", "]"].includes(event.key)) return;
    if (event.target.closest && event.target.closest("input, select, textarea")) return;
    const day = new Date(`${state.date}T12:00:00Z`);
    day.setUTCDate(day.getUTCDate() + (event.key === "]" ? 1 : -1));
    const iso = day.toISOString().slice(0, 10);
    $("day").value = iso;
    changeDay(iso);
  }

  function conflictText(conflict) {
    if (!conflict) return "";
    if (conflict.kind === "moved") return `Tebra: moved to ${conflict.to_date}`;
    if (conflict.kind === "deleted") return "Tebra: appointment deleted";
    return `Tebra: ${conflict.status}`;
  }

  function metaText(row) {
    const parts = [
      conflictText(row.tebra_conflict),
      row.dob ? `DOB ${row.dob}` : "",
      row.room ? `room ${row.room}` : "",
      waitText(row),
    ];
    return parts.filter(Boolean).join(" · ");
  }

  function refreshWaits() {
    document.querySelectorAll(".card").forEach((node) => {
      const row = state.rows.get(node.dataset.hpid);
      if (row) node.querySelector(".meta").textContent = metaText(row);
    });
  }

  // -- start --------------------------------------------------------------------------------------------------

  function isDay(value) {
    return /^\d{4}-\d{2}-\d{2}$/.test(value || "");
  }

  async function start() {
    const response = await fetch("/board/config", { cache: "no-store" });
    const config = await response.json();
    state.config = { ...config, auth: config.auth || { mode: "dev" } };
    $("gate-action").addEventListener("click", startSignIn);
    $("sign-out").addEventListener("click", signOut);
    if (!response.ok) {
      const message = config.error ? config.error.message : `HTTP ${response.status}`;
      gate("error", "config", "Sign-in is unavailable", message, "");
      return;
    }
    const asked = new URLSearchParams(window.location.search).get("date");
    state.date = isDay(asked) ? asked : state.config.today;
    if (signingIn()) {
      let day;
      try {
        day = await signIn(isDay(asked) ? asked : null);
      } catch (err) {
        failSignIn(err);
        return;
      }
      if (day === null) return;
      state.date = isDay(day) ? day : state.config.today;
      window.history.replaceState(null, "", `/?date=${state.date}`);
      showWho();
    } else {
      document.body.dataset.auth = "dev";
      await fetchToken();
      if (!state.token && state.config.dev_token) notice("No development token: calls go unauthenticated.", true);
    }
    showControls();
    const picker = $("day");
    picker.value = state.date;
    picker.addEventListener("change", () => changeDay(picker.value));
    $("sync-now").addEventListener("click", syncNow);
    document.addEventListener("keydown", onShortcut);
    render();
    await Promise.all([loadBoard(), loadSyncStatus(), may("ops:breaker") ? loadBreaker() : null]);
    if (!state.token && signingIn()) return; // a 401 on the first reads ended on a page
    connect(); // subscribes with since = the board's last_event_id: every change after the read follows
    SignIn.boardLoaded();
    document.body.dataset.ready = "true";
    window.setInterval(refreshWaits, 60000); // wait times move on even when nothing else does
  }

  start().catch((err) => notice(`The board could not start: ${err}`, true));
})();
