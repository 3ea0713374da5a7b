// The live patient-flow board: REST for the day's state, /ws for every change after it (docs/board.md).
// Plain JavaScript, no build step, no framework; no inline code or styles anywhere (the page's CSP).
"use strict";

(function () {
  const API = "/api/v1";
  const RECONNECT_MIN_MS = 500;
  const RECONNECT_MAX_MS = 10000;
  const ENDED = new Set(["cancelled", "no-show", "rescheduled"]);
  const STAMP_ON_ENTRY = { arrived: "checkin_time", "with-doctor": "with_doctor_time", completed: "completed_time" };

  const state = {
    config: null, // /board/config: clinic_tz, today, states, next, dev_token
    token: null,
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
      if (response.status === 401 && attempt === 0 && state.config.dev_token) {
        await fetchToken(); // expired: one fresh token, one retry
        continue;
      }
      let payload = null;
      try {
        payload = await response.json();
      } catch (err) {
        payload = null;
      }
      return { status: response.status, ok: response.ok, payload };
    }
    return { status: 401, ok: false, payload: null };
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
    return [`schedule:${date}`, `patients:${date}`, "ops"];
  }

  function connect() {
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
      connect();
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

  function render() {
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
    board.replaceChildren(...columns);
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
    name.textContent = status.replace(/-/g, " ");
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
    const select = node.querySelector(".next");
    const next = row.allowed_next || state.config.next[row.status] || [];
    select.add(new Option("Move to…", "", true, true));
    next.forEach((status) => select.add(new Option(status, status)));
    select.disabled = next.length === 0;
    node.querySelector(".move").hidden = next.length === 0; // a visit that has ended has nothing to move
    select.addEventListener("change", () => {
      if (select.value) move(row.hpid, select.value, roomInput.value.trim());
    });
    return node;
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

  async function start() {
    const response = await fetch("/board/config", { cache: "no-store" });
    state.config = await response.json();
    const asked = new URLSearchParams(window.location.search).get("date");
    state.date = /^\d{4}-\d{2}-\d{2}$/.test(asked || "") ? asked : state.config.today;
    const picker = $("day");
    picker.value = state.date;
    picker.addEventListener("change", () => changeDay(picker.value));
    $("sync-now").addEventListener("click", syncNow);
    await fetchToken();
    if (!state.token && state.config.dev_token) notice("No development token: calls go unauthenticated.", true);
    render();
    await Promise.all([loadBoard(), loadSyncStatus(), loadBreaker()]);
    connect(); // subscribes with since = the board's last_event_id: every change after the read follows
    document.body.dataset.ready = "true";
    window.setInterval(refreshWaits, 60000); // wait times move on even when nothing else does
  }

  start().catch((err) => notice(`The board could not start: ${err}`, true));
})();
