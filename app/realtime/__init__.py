"""``/ws``: the browser's live feed of events (docs/realtime.md).

Modules, each named by what it holds:

- ``endpoint``: the /ws route, one :class:`~app.realtime.endpoint.Session` per socket, the handshake checks;
- ``protocol``: the client messages, the replies, close and error codes;
- ``access``: the hooks that authenticate a socket and authorise its topics (app/auth.py installs them);
- ``relay``: which sockets want which topics, and the fan-out of each event to them;
- ``subscriber``: the one Redis pub/sub subscriber of an API process;
- ``stream``: reading ``agent_updates`` back for replays;
- ``connection``: one client socket, every write under one lock;
- ``frame``: WebSocket frames built once per event.

Which topic an event belongs to, and the scope a topic needs, is the topic table of tasks/events.py.
"""
