"""The verify core: is a backup intact, and (optionally) does it match a live database?

:func:`verify` reads every member once, as a stream: SHA-256, byte count, document count
and that every line parses to BSON, each compared with the manifest. It never raises for
a damaged member; problems are collected in the result, with member and line, so that
one run reports everything. Only an unreadable manifest or archive raises
:class:`ArchiveError`, and a stream read as it arrives (``verify -`` of what ``backup
--archive -`` writes: no temporary copy), whose reader checks each member's checksum
against the manifest at its end and raises for the first that does not match.

With ``against_uri`` it also compares each collection with a live database: documents
missing, extra and different (by ``_id``, on exact bytes), options and indexes that
differ. That comparison keeps one 20-byte digest per backed-up document in memory.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import bson
from bson.raw_bson import RawBSONDocument

from ..archive.chain import resolve_chain
from ..archive.lines import StreamStats, read_documents
from ..archive.manifest import CollectionEntry, Manifest
from ..archive.reader import BackupReader, open_backup
from ..archive.streamed import StreamedReader
from ..errors import ArchiveError, ConfigError, LineFormatError
from ..location.pipe import is_stdio, open_streamed_stdin
from ..location.transfer import local_copy
from ..mongo.connection import connect
from ..mongo.deployment import DeploymentDatabase
from ..mongo.source import MongoSource, from_extjson, to_extjson
from ..redact import uri_secrets

MAX_PROBLEMS_PER_MEMBER = 20
MAX_DIFF_EXAMPLES = 5


@dataclass
class MemberReport:
    name: str
    file: str
    expected_count: int | None  # None: the source records no count (mongodump)
    expected_bytes: int
    count: int = 0
    bytes: int = 0
    sha256: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class AgainstReport:
    name: str
    missing: int = 0  # in the backup, not in the database
    extra: int = 0  # in the database, not in the backup
    different: int = 0
    examples: list[str] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.different or self.metadata)


@dataclass
class VerifyResult:
    location: str
    manifest: Manifest
    members: list[MemberReport]
    against: list[AgainstReport] | None
    duration: float
    # An increment: the archives of its chain, full backup first, and what is wrong
    # with them (a missing or mismatching link, a damaged archive).
    chain: list[str] = field(default_factory=list)
    chain_problems: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        found = list(self.chain_problems)
        found += [f"{m.file}: {p}" for m in self.members for p in m.problems]
        for report in self.against or []:
            if not report.ok:
                found.append(
                    f"{report.name}: {report.missing} missing, {report.extra} extra, "
                    f"{report.different} different" + "".join(f"; {m}" for m in report.metadata)
                )
        return found

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "database": self.manifest.database,
            "ok": self.ok,
            "members": [vars(m) | {"ok": m.ok} for m in self.members],
            "against": [vars(a) | {"ok": a.ok} for a in self.against]
            if self.against is not None
            else None,
            "chain": self.chain,
            "problems": self.problems,
            "duration_s": round(self.duration, 3),
        }


def check_member(
    entry: CollectionEntry, stream: IO[bytes], keep: dict[bytes, bytes] | None = None
) -> MemberReport:
    """Read one member to its end, comparing it with its manifest entry."""
    assert entry.file is not None
    # A foreign source (mongodump) records no size, count or checksum: no expected count.
    expected = None if entry.sha256 is None else entry.count
    report = MemberReport(entry.name, entry.file, expected, entry.bytes)
    stats = StreamStats()

    def bad_line(error: LineFormatError) -> None:
        _problem(report, f"line {error.line}: {error.problem}")

    try:
        for _number, raw in read_documents(stream, entry.file, stats, on_error=bad_line):
            report.count += 1
            if keep is not None:
                keep[id_key(raw)] = hashlib.sha1(raw).digest()
    except LineFormatError as error:  # structure: the rest cannot be split into documents
        _problem(report, f"line {error.line}: {error.problem}")
    # Drain what a parse error left unread, so bytes and checksum cover the whole member.
    while chunk := stream.read(1 << 20):
        stats.update(chunk)
    report.bytes, report.sha256 = stats.bytes, stats.sha256
    if entry.sha256 is None:
        return report
    if report.bytes != entry.bytes:
        report.problems.append(f"size is {report.bytes} bytes, the manifest says {entry.bytes}")
    if report.sha256 != entry.sha256:
        report.problems.append(f"sha256 is {report.sha256}, the manifest says {entry.sha256}")
    if report.count != entry.count:
        report.problems.append(f"holds {report.count} documents, the manifest says {entry.count}")
    return report


def _problem(report: MemberReport, text: str) -> None:
    if len(report.problems) < MAX_PROBLEMS_PER_MEMBER:
        report.problems.append(text)


def id_key(raw: bytes) -> bytes:
    """The ``_id`` element of a raw document, encoded: equal keys mean equal ``_id``."""
    value = RawBSONDocument(raw).get("_id")
    return bson.encode({"": value})


@dataclass
class VerifyOptions:
    source: str  # a backup folder or archive, a storage URL, an encrypted archive
    against_uri: str | None = None  # also compare with this live deployment
    against_db: str | None = None  # ... this database of it (default: the backup's)
    timeout: float = 30.0
    identity: Path | None = None  # age identity for an encrypted (.age) archive
    endpoint_url: str | None = None  # S3-compatible endpoint when source is a URL


def run_verify(options: VerifyOptions) -> VerifyResult:
    """Check a backup (a path, a storage URL, or an encrypted archive with ``identity``):
    manifest, every member, the chain of an increment, and optionally a live database."""
    head = b""
    if is_stdio(options.source):  # the streamed form is checked as it arrives
        reader, stdin = open_streamed_stdin(options.identity)
        if reader is not None:
            with reader:
                if reader.plan.kind == "full":  # an increment needs its chain: a file
                    return _verify_streamed(reader, options)
        head = bytes(stdin.head)
    with local_copy(options.source, options.identity, options.endpoint_url, head) as local:
        result = _verify(str(local), options.against_uri, options.against_db, options.timeout)
    result.location = options.source
    return result


def _verify_streamed(reader: StreamedReader, options: VerifyOptions) -> VerifyResult:
    """A stream read once, no temporary copy: every member hashed and checked against
    the manifest at its end by the reader (a mismatch is its ArchiveError), parsed and
    counted here; the counts are compared once the manifest has come."""
    started = time.perf_counter()
    _check_against(reader.plan, options.against_uri, options.against_db)
    kept: dict[str, dict[bytes, bytes]] = {}
    members = list(_check_all(reader, kept if options.against_uri else None))
    manifest = reader.manifest
    by_file = {entry.file: entry for entry in manifest.data_entries}
    for report in members:
        entry = by_file[report.file]
        report.expected_count, report.expected_bytes = entry.count, entry.bytes
        if report.count != entry.count:
            report.problems.append(
                f"holds {report.count} documents, the manifest says {entry.count}"
            )
    against = None
    if options.against_uri:
        db = options.against_db or manifest.database
        against = compare_with_database(manifest, kept, options.against_uri, db, options.timeout)
    return VerifyResult("-", manifest, members, against, time.perf_counter() - started)


def verify(location: str, **options: Any) -> VerifyResult:
    """:func:`run_verify` with the options as keywords."""
    return run_verify(VerifyOptions(source=location, **options))


def _verify(
    location: str, against_uri: str | None, against_db: str | None, timeout: float
) -> VerifyResult:
    started = time.perf_counter()
    with open_backup(location) as reader:
        kept: dict[str, dict[bytes, bytes]] = {}
        _check_against(reader.manifest, against_uri, against_db)
        members = list(_check_all(reader, kept if against_uri else None))
        manifest = reader.manifest
    against = None
    if against_uri:
        against = compare_with_database(
            manifest, kept, against_uri, against_db or manifest.database, timeout
        )
    result = VerifyResult(location, manifest, members, against, 0.0)
    if manifest.kind == "incremental":
        _check_chain(result)
    result.duration = time.perf_counter() - started
    return result


def _check_against(manifest: Manifest, against_uri: str | None, against_db: str | None) -> None:
    if against_uri and manifest.kind == "incremental":
        raise ConfigError(
            "--against compares a full backup with a database; restore the chain of "
            "an increment and compare that instead"
        )
    if against_uri and against_db and manifest.databases is not None:
        raise ConfigError(
            "--against-db names one database: this backup holds several, compared "
            "with the same databases at --against"
        )


def _check_chain(result: VerifyResult) -> None:
    """An increment restores only with its whole chain: check every link and archive."""
    try:
        links = resolve_chain(Path(result.location), result.manifest)
    except ArchiveError as error:
        result.chain_problems.append(str(error))
        return
    result.chain = [str(link.path) for link in links]
    for link in links[:-1]:
        try:
            with open_backup(link.path) as reader:
                reports = list(_check_all(reader, None))
        except ArchiveError as error:
            result.chain_problems.append(f"chain: {error}")
            continue
        result.chain_problems += [
            f"chain: {link.path.name}: {m.file}: {p}" for m in reports for p in m.problems
        ]


def _check_all(
    reader: BackupReader, kept: dict[str, dict[bytes, bytes]] | None
) -> Iterator[MemberReport]:
    for entry, stream in reader.members():
        keep: dict[bytes, bytes] | None = None
        if kept is not None:
            keep = kept.setdefault(entry.name, {})
        yield check_member(entry, stream, keep)


def compare_with_database(
    manifest: Manifest, kept: dict[str, dict[bytes, bytes]], uri: str, db: str, timeout: float
) -> list[AgainstReport]:
    client = connect(uri, timeout=timeout, document_class=RawBSONDocument)
    try:
        several = None
        if manifest.databases is not None:  # a backup of several: the same databases
            several = DeploymentDatabase(client, manifest.databases)
        source = MongoSource(client, db, uri_secrets(uri), databases=several)
        live = {intent.name: intent for intent in source.intents()}
        reports = []
        for entry in manifest.collections:
            if not entry.is_collection:
                continue  # events (restore replays them), users and roles
            report = AgainstReport(entry.name)
            intent = live.get(entry.name)
            if intent is None:
                report.metadata.append("collection missing in the database")
                report.missing = entry.count
                reports.append(report)
                continue
            if _comparable_options(intent.options) != _comparable_options(entry.options):
                report.metadata.append("collection options differ")
            if _index_set(intent.indexes) != _index_set(entry.indexes):
                report.metadata.append("indexes differ")
            if entry.file is not None:
                query = manifest.query
                subset = (
                    from_extjson(query["filter"])
                    if query and entry.name in query["collections"]
                    else None
                )
                _compare_documents(source, entry.name, kept.get(entry.name, {}), report, subset)
            reports.append(report)
        return reports
    finally:
        client.close()


def _compare_documents(
    source: MongoSource,
    name: str,
    expected: dict[bytes, bytes],
    report: AgainstReport,
    subset: dict[str, Any] | None = None,
) -> None:
    """The live documents (``subset``: only those a --query backup kept) against the
    backup's, by ``_id`` and exact bytes."""
    remaining = dict(expected)
    for batch, _ in source.raw_batches(name, query=subset):
        for raw in bson.decode_iter(batch, codec_options=_RAW):
            data = bytes(raw.raw)
            key = id_key(data)
            digest = remaining.pop(key, None)
            if digest is None:
                report.extra += 1
                _example(report, f"extra _id {_show(key)}")
            elif digest != hashlib.sha1(data).digest():
                report.different += 1
                _example(report, f"different _id {_show(key)}")
    report.missing = len(remaining)
    for key in list(remaining)[:MAX_DIFF_EXAMPLES]:
        _example(report, f"missing _id {_show(key)}")


_RAW = bson.CodecOptions(document_class=RawBSONDocument)


def _show(key: bytes) -> str:
    value = bson.decode(key)[""]
    return str(to_extjson(value))[:80]


def _example(report: AgainstReport, text: str) -> None:
    if len(report.examples) < MAX_DIFF_EXAMPLES:
        report.examples.append(text)


def _comparable_options(options: dict[str, Any]) -> Any:
    return {k: v for k, v in options.items() if k not in ("uuid",)}


def _index_set(indexes: list[dict[str, Any]]) -> set[str]:
    return {
        json.dumps({k: v for k, v in ix.items() if k not in ("ns", "v")}, sort_keys=True)
        for ix in indexes
    }
