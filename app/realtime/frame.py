"""WebSocket frames built by hand, once per event, as the bytes every socket receives (RFC 6455 §5.2).

Server-to-client frames are never masked, so one event's frame is the same bytes for every socket: the relay
builds it once and hands the same object to each send. Framing per socket in Python (what a WebSocket
library's ``send`` does) costs ~8-10 µs a socket, which is what kept p95 above the goal at 1,000 sockets.
"""

from __future__ import annotations

import struct

OPCODE_TEXT = 0x1
OPCODE_CLOSE = 0x8
_FIN = 0x80


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame with ``opcode`` carrying ``payload``."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", _FIN | opcode, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", _FIN | opcode, 126, size)
    else:
        header = struct.pack("!BBQ", _FIN | opcode, 127, size)
    return header + payload


def text_frame(text: bytes) -> bytes:
    """A text message frame; ``text`` must already be UTF-8 (the relay passes Redis's bytes through)."""
    return frame(OPCODE_TEXT, text)


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with a status code and a short reason (control frames carry at most 125 bytes)."""
    payload = struct.pack("!H", code) + reason.encode()[:123]
    return frame(OPCODE_CLOSE, payload)
