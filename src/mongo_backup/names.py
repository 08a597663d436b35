"""Collection names to safe, unique file names.

MongoDB collection names may hold ``/``, spaces, newlines, any unicode, differ only by
letter case, and run to 200+ bytes. Archive members and files on disk must do none of
that: a member must never escape the backup folder, and two collections must never
share a file on a case-insensitive file system. The manifest records the mapping, so
readers never have to reverse it.

The rule, a pure function of the set of names (so resume computes the same mapping):
1. Keep ``A-Z a-z 0-9 _ - .``; write every other byte of the UTF-8 name as ``%XX``
   (``%`` itself included). A leading ``.`` is encoded too (no hidden files, no ``..``).
2. Names whose encoded stem is longer than :data:`MAX_STEM` bytes are cut and get
   ``~`` plus 16 hex digits of the name's SHA-256, so they stay unique.
3. Stems that collide when letter case is ignored (or that are reserved device names on
   Windows) get the same ``~hash`` suffix, except the first name in sorted order.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from typing import Literal

FILE_SUFFIX = ".jsonl"
# An archive's first member (see archive.manifest); here so that the converter child,
# which writes members, need not load the manifest's dataclasses to know it.
MANIFEST_NAME = "manifest.json"
# The streamed form (``backup --archive -``): the plan first, the manifest last.
PLAN_NAME = "plan.json"
# Where backups go in an output folder: OUT_DIR/backup_data/backup_{stamp}.tar[...]
ARCHIVE_FOLDER = "backup_data"
# How members and archives are compressed, and the Extended JSON modes: here rather than
# beside the writer (which loads zstandard and tarfile) or the converter (libbson)
# because every command's parser offers them as choices.
COMPRESSIONS = ("none", "gzip", "zstd")
SUFFIXES = {"none": ".tar", "gzip": ".tar.gz", "zstd": ".tar.zst"}
JsonFormat = Literal["canonical", "relaxed"]
JSON_FORMATS: tuple[JsonFormat, ...] = ("canonical", "relaxed")
FOLDER_PREFIX = "backup_"
# An archive's name: backup_{YYYYmmdd_HHMMSS}[_N].tar[.gz|.zst][.age]. Groups: the id
# (the name without suffixes), the UTC time stamp, and the number of a same-second run.
ARCHIVE_NAME = re.compile(r"^(backup_(\d{8}_\d{6})(?:_(\d+))?)\.tar(?:\.gz|\.zst)?(?:\.age)?$")
MAX_STEM = 120
# The "database" of a backup of several databases (all of them, or those named): its
# collections are named by namespace, ``DB.COLLECTION`` (database names hold no dot,
# so the first one separates them). See mongo/deployment.py.
ALL_DATABASES = "*"
_SAFE = re.compile(rb"[A-Za-z0-9_.\-]")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {
    f"{p}{i}" for p in ("COM", "LPT") for i in range(10)
}


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def encode_stem(name: str) -> str:
    """The percent-encoded, length-bounded stem for one collection name."""
    out: list[str] = []
    for index, byte in enumerate(name.encode("utf-8", "surrogatepass")):
        char = bytes([byte])
        if _SAFE.fullmatch(char) and not (index == 0 and char == b"."):
            out.append(char.decode("ascii"))
        else:
            out.append(f"%{byte:02X}")
    stem = "".join(out)
    if len(stem) > MAX_STEM:
        stem = f"{stem[: MAX_STEM - 17]}~{_digest(name)}"
    return stem or "%"  # an empty name cannot exist, but never produce an empty stem


def file_names(collection_names: Iterable[str]) -> dict[str, str]:
    """Map every collection name to its file name (``stem.jsonl``), unique ignoring case."""
    mapping: dict[str, str] = {}
    taken: set[str] = set()
    for name in sorted(set(collection_names)):
        stem = encode_stem(name)
        folded = stem.casefold()
        if folded in taken or stem.split(".")[0].upper() in _WINDOWS_RESERVED:
            # The suffix goes before the first dot: Windows reserves "AUX.anything" too.
            head, dot, tail = stem.partition(".")
            suffix = f"~{_digest(name)}"
            stem = (head[: MAX_STEM - len(suffix)] + suffix + dot + tail)[:MAX_STEM]
            folded = stem.casefold()
        taken.add(folded)
        mapping[name] = stem + FILE_SUFFIX
    return mapping


def keep_all(name: str) -> bool:
    """The filter of a backup or restore without collection options: every collection
    (recognised by identity: a change capture then need not read each event's collection)."""
    return True


def collection_filter(
    include: Iterable[str],
    exclude: Iterable[str],
    db: str = "",
    ns_include: Iterable[str] = (),
    ns_exclude: Iterable[str] = (),
) -> Callable[[str], bool]:
    """The collections ``--collection`` (none: all) and ``--exclude-collection`` keep,
    and of those the ones the ``--ns-include`` / ``--ns-exclude`` patterns keep (the
    namespaces of database ``db``)."""
    wanted, unwanted = set(include), set(exclude)
    keep = [namespace_pattern(p) for p in ns_include]
    drop = [namespace_pattern(p) for p in ns_exclude]
    if not (wanted or unwanted or keep or drop):
        return keep_all

    def kept(name: str) -> bool:
        namespace = qualified(db, name)
        return (
            (not wanted or name in wanted)
            and name not in unwanted
            and (not keep or any(p.fullmatch(namespace) for p in keep))
            and not any(p.fullmatch(namespace) for p in drop)
        )

    return kept


def namespace_pattern(text: str) -> re.Pattern[str]:
    """A ``--ns-include``-style pattern, ``DB.COLLECTION`` where ``*`` stands for any
    characters (within the database name: no dot), as mongodump's ``--nsInclude``;
    ValueError for anything else."""
    db, dot, collection = text.partition(".")
    if not dot or not db or not collection:
        raise ValueError(f"namespace pattern {text!r}: expected DB.COLLECTION, such as shop.*")
    part = "[^.]*"
    return re.compile(
        part.join(map(re.escape, db.split("*")))
        + r"\."
        + ".*".join(map(re.escape, collection.split("*"))),
        re.DOTALL,
    )


def database_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a database's name (None if it can)."""
    if set('/\\. "$\x00') & set(name) or not name or len(name.encode()) > 63:
        return f"invalid database name {name!r}"
    return None


def scope_text(db: str) -> str:
    """How messages name what a backup holds: ``database 'shop'`` or ``all databases``."""
    return "the databases" if db == ALL_DATABASES else f"database {db!r}"


def qualified(db: str, name: str) -> str:
    """The namespace of collection ``name`` of database ``db``; a backup of several
    databases (:data:`ALL_DATABASES`) names its collections by namespace already."""
    return name if db == ALL_DATABASES else f"{db}.{name}"


def unmatched_patterns(patterns: Iterable[str], db: str, names: Iterable[str]) -> list[str]:
    """The patterns that match none of database ``db``'s collections ``names``."""
    namespaces = [qualified(db, name) for name in names]
    return [p for p in patterns if not any(namespace_pattern(p).fullmatch(n) for n in namespaces)]


def id_order(backup_id: str) -> tuple[str, int, str]:
    """A sort key for backup ids: ``backup_{ts}_10`` after ``backup_{ts}_9`` (a string
    sort would put it before, and the eleventh backup of a second would not be newest)."""
    match = re.fullmatch(r"(.*?)(?:_(\d+))?", backup_id)
    assert match is not None
    stem, number = match.group(1), match.group(2)
    return (stem, int(number) if number else 0, backup_id)


def is_safe_member_name(member: str) -> bool:
    """True for a plain file name this tool could have written (no path, no tricks)."""
    return (
        0 < len(member) <= 255
        and "/" not in member
        and "\\" not in member
        and "\x00" not in member
        and not member.startswith(".")
        and member.isprintable()
    )
