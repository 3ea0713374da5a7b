"""Every Celery task's name, spelled once (the way tasks/keys.py spells Redis names).

A task is sent and registered by these names: they are on the wire (the broker's messages, Flower, the
``task_results`` stream, ``task:{id}``'s ``action``), so they change only together with every reader.
The API sends none of them itself: it calls the tasks-side function that queues each (docs/architecture.md,
"How to add a Tebra operation, an endpoint, an event").
"""

from __future__ import annotations

SYNC = "schedule.sync"  # one clinic day from Tebra (tasks/sync/job.py)
WATCH = "schedule.watch"  # beat's tick of the watch (tasks/sync/watch.py)
PERIODIC_SYNC = "schedule.periodic_sync"  # beat's optional sync of today
SWEEP = "schedule.sweep"  # beat resends accepted syncs whose message was lost (tasks/sync/sweep.py)
FETCH_DETAILS = "patients.fetch_details"  # one patient's details on one day (tasks/patients/job.py)
REFRESH_PROVIDERS = "providers.refresh"  # cache:providers from Tebra (tasks/providers/job.py)
CHECK_TEBRA = "tebra.check"  # the Tebra account check, run on a worker (tasks/tebra/check.py)
NOOP = "diagnostics.noop"  # a bare round trip: the benchmarks' floor, an operator's queue check
