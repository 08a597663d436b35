"""The archive format: what a backup *is*, on disk and in a stream.

- ``manifest``: the manifest (namespaces, members, checksums, chain links) and its
  canonical bytes.
- ``extjson``: BSON <-> Extended JSON Lines through libbson (python-bsonjs), the
  per-document hot path, and the bounded line readers.
- ``writer``: member files (hashed, compressed, resumable) and the tar that joins them.
- ``reader``: opening a backup (folder or ``.tar[.gz|.zst]``) for reading, bounded and
  forward-only, refusing hostile members.
- ``single_file``: a lone ``.json``/``.jsonl`` (mongoexport output) read as a backup.
- ``encryption``: age encryption of whole archives.
- ``chain``: full backup -> increments, found and checked by their parent links.

May import: the ground modules (``errors``, ``names``, ``files``, ``redact``, ``retry``)
and nothing else of the project: the format knows no server and no store. Kept free of
imports here, because the converter child process starts from ``archive.writer``.
"""
