"""The backup core: a database to one archive (``run.run_backup``).

- ``options``: ``BackupOptions`` (what the user asked), ``BackupResult`` (what happened).
- ``run``: the order of things: lock, plan, export, capture changes, manifest, archive,
  deliver.
- ``planning``: the working folder, the namespaces and the units of work (a collection,
  or one ``_id`` range of a big one); ``--resume`` finds and loads a saved plan.
- ``checkpoint``: the saved plan and each unit's progress (what makes resume exact).
- ``exporter``: workers that read units from the server and feed their converters.
- ``convert_thread``: the converter on a thread (the C converter's path), or a process
  for what needs the GIL or a lot of memory (``new_converter`` chooses).
- ``convert_worker`` / ``convert_child``: the converter process, parent's and child's side
  (BSON batches in, member files out).
- ``consistency``: one moment for the whole backup (snapshot reads, or change capture).
- ``increments``: what an increment continues, and the ``--since-field`` marks.
- ``manifest_builder``: the finished backup's manifest; split ranges joined.
- ``delivery``: encrypt and upload the archive (``--dest``, ``--stream``).

May import: ``archive``, ``mongo``, ``location``, ``destinations`` and the ground
modules; never ``restore``, ``verify`` or ``cli``. Kept free of imports here, because
the converter child imports ``backup.convert_child`` and must start cheaply.
"""
