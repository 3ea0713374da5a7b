"""The Tebra circuit breaker: one state in Redis (``cb:tebra``) shared by every worker process and the API.

By capability (docs/breaker.md is the operator's page):

- ``state``: the states, reasons, Redis key names and the rules' numbers (from the settings);
- ``scripts``: the Lua scripts every decision runs in, timed by Redis's own clock;
- ``store``: :class:`~tasks.breaker.store.BreakerStore`, those scripts over one client (admit, record,
  force, clear, snapshot), used by the workers' guard and by the API's ops routes;
- ``glance``: the cheap read a request path makes (no script);
- ``transition``: one change of state and its announcement (``breaker_state_changed``);
- ``errors``, ``storage``, ``guard``: the worker side, on pybreaker: the refusal exceptions, pybreaker's
  storage interface over the store, and :class:`~tasks.breaker.guard.TebraBreaker`, the guard the gateway
  calls around each Tebra call.

Only the last three import pybreaker, and none of the package imports ``tasks.tebra`` or zeep: the API may
read and steer the breaker (setup.cfg's import-linter contract).
"""
