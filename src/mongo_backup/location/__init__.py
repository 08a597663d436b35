"""Where backups live: a folder or a storage URL seen as a set of backups.

- ``transfer``: archives to and from a location (verified uploads, checked downloads,
  whole chains fetched, encrypted archives decrypted).
- ``catalog``: the backups at a location, as ``StoredBackup`` rows.
- ``retention``: the retention policy, a pure function (restic's ``forget`` rules).
- ``prune``: the prune core (``run_prune``): lock, list, decide, remove.
- ``locking``: one run at a time per location.

May import: ``archive``, ``destinations`` and the ground modules; never ``backup``,
``restore``, ``verify`` or ``cli``.
"""
