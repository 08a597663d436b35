"""The restore core: one archive (or a chain, or a mongoexport file) into a database
(``run.run_restore``).

- ``options``: ``RestoreOptions`` (what the user asked), ``RestoreResult``.
- ``run``: the order of things: fetch, verify, restore the namespaces, replay the chain.
- ``namespaces``: collections created with their options, documents inserted, indexes
  built, views created in dependency order.
- ``replay``: a chain's increments and captured changes applied, up to ``--until``.
- ``state``: progress kept for ``restore --resume``.

May import: ``verify`` (a restore verifies first), ``archive``, ``mongo``, ``location``
and the ground modules; never ``backup`` or ``cli``.
"""
