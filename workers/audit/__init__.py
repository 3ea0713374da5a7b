"""The audit writer: the ``audit`` stream, turned into signed, hash-chained JSON lines on disk.

    python -m workers.audit run            # the process `make run` starts (Procfile ``audit:``)
    python -m workers.audit verify FILE    # exit 0 if intact, 1 with the first broken line otherwise

By capability: workers/audit/chain.py (the signed, chained line format, the anchor, verification),
workers/audit/writer.py (the writer: stream in, lines on disk), workers/audit/__main__.py (the command).

One line per record, canonical JSON (sorted keys, no spaces)::

    {"mac": HMAC-SHA256(AUDIT_SIGNING_KEY, the line without "mac"), "n": 1, 2, 3…,
     "prev": SHA-256 of the previous line's bytes (64 zeros for the first), "record": {…}, "stream_id": "…"}

An edited line fails its MAC; a deleted, inserted or moved line breaks ``n`` and the ``prev`` chain;
``stream_id`` must keep increasing (a gap line shares the id of the entry that revealed it). A line cannot be
forged without the key.

What enters the log is checked first (tasks/audit.py): a stream entry whose ``tag`` does not verify under
``AUDIT_RECORD_KEY`` becomes an ``audit.forged`` line (its field names and a digest, never its content); a
``seq`` that skips numbers writes an ``audit.gap`` line (entries deleted or trimmed before they were read);
a ``seq`` already written, or a tag seen among the last REPLAY_MEMORY records, an ``audit.replayed`` line.
Written entries are acknowledged and deleted, so the stream's length is the writer's backlog.

Anchor: after each batch the writer replaces a signed checkpoint of the head (``n`` and hash) at
``AUDIT_ANCHOR_PATH`` (default: the log's path + ``.anchor``; best on other storage). ``verify`` requires
the log to reach the anchor's line with the anchor's hash, and the writer refuses to start on a log that
does not: an emptied, shortened or replaced log no longer verifies.

Delivery: the writer reads through the consumer group ``audit-writer`` (one consumer, ``writer``; a file
lock keeps a second writer out), appends a batch, fsyncs, and only then XACKs it. After a crash the
unacknowledged entries are read again (pending list first); any whose stream id is not above the file's
last line was written before the crash and is acknowledged without a second line. A torn last line (the
crash came mid-write, before fsync returned, so it was never acknowledged) is cut off and written again.
The writer also keeps the head in Redis (``audit:head``: n and hash) for dashboards.
"""
