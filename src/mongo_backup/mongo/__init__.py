"""The MongoDB edge: everything that talks to a server.

- ``connection``: connecting (timeouts, a first ping that rides out faults, durable writes).
- ``source``: listing namespaces ("intents"), sizes, split points, reading.
- ``prefetch``: raw BSON batches read ahead in ``_id`` order, retried after a fault.
- ``inserter``: raw documents inserted in unordered bulk batches by worker threads, counted.
- ``cluster_time``: cluster times, ``--until``, the check that snapshot reads held.
- ``change_capture``: change events read from a change stream.
- ``change_apply``: change events applied to a database.
- ``embedded``: a SecantusDB server process (the demo's, the tests', the benchmark's).

May import: the ground modules only (``errors``, ``redact``, ``retry``); it knows
nothing of archives, stores or the cores.
"""
