"""``restore -``: a piped backup restored while it arrives, when that can keep nothing.

``backup --archive -`` sends its archive in the streamed form
(:mod:`mongo_backup.archive.streamed`): the plan, each member as the backup finishes it,
the manifest last. Read as it arrives, this restore creates the collections from the
plan and inserts a member's documents while the backup is still reading the next: the
two sides overlap, and no temporary file holds the stream.

A stream is only known to be whole at its end, and a restore must keep nothing of one
that is cut or damaged: this is the one-pass restore of :mod:`.one_pass` (only into
namespaces it creates, dropped again on any failure before the manifest has proved the
stream whole).

An age-encrypted stream is decrypted as it is read (``--identity``). Everything else
falls back to the archive's path, verified before the first write: a stream in the
archive-file form (a saved archive piped in), an encrypted one without ``--identity`` or
with a wrong key (the error comes from there), a target that already holds one of the
namespaces (``--drop`` must not drop them for a stream that may yet be cut), a dry run,
``--resume``, ``--until``, an increment. For that,
:func:`restore_piped` returns the bytes it read from stdin, which the temporary copy
(:func:`~mongo_backup.location.pipe.spooled_stdin`) begins with.
"""

from __future__ import annotations

from ..location.pipe import open_streamed_stdin
from .one_pass import restore_if_new
from .options import RestoreOptions
from .result import RestoreResult


def restore_piped(opts: RestoreOptions) -> tuple[RestoreResult | None, bytes]:
    """Restore stdin as it arrives if this path applies: (the result, b""); else
    (None, the bytes read from stdin so far), nothing written."""
    if opts.dry_run or opts.resume or opts.until is not None:
        return None, b""
    reader, stdin = open_streamed_stdin(opts.identity)
    if reader is None:
        return None, bytes(stdin.head)
    with reader:  # closing it stops the decryption before stdin is read on
        full = reader.plan.kind == "full"
        result = restore_if_new(opts, reader, stdin.forget) if full else None
    return (result, b"") if result is not None else (None, bytes(stdin.head))
