"""A local folder as a destination: ``/backups`` or ``file:///backups``.

Key ``a/b.tar.zst`` is the file ``ROOT/a/b.tar.zst``; folders are created as needed and
the root itself on the first write.

Contracts, beyond those of :class:`~.base.Destination`:
- Writes go to a hidden temporary file in the target's own folder
  (``.NAME.mb-tmp-RANDOM``: same file system, so the rename cannot turn into a copy),
  which is flushed to disk (fsync) and then renamed over the key; the folder is then
  flushed too, so that the rename itself survives a power cut. A failed write removes
  its temporary file.
- Metadata lives beside the object in ``KEY.meta.json``, written the same way and
  *before* the object is renamed into place: a crash in between leaves at worst an
  orphan sidecar (hidden, and replaced or removed by the next put or delete) or, when
  a key is overwritten, the old bytes with the new metadata.
- ``list()`` shows regular files whose paths are valid keys; symbolic links, sidecars,
  temporary files and files named otherwise (``my notes.txt``) are not objects.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat as stat_mode
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ..errors import DestinationError, InvalidKey, ObjectNotFound
from ..files import sync_folder
from .base import (
    SIDECAR_SUFFIX,
    TEMP_MARKER,
    ObjectInfo,
    check_key,
    check_metadata,
    check_prefix,
    is_hidden,
)

logger = logging.getLogger(__name__)

_COPY_BUFFER = 1024 * 1024
Sink = Callable[[bytes], None]


class LocalFolder:
    """Objects as files under ``root`` (see the module docstring)."""

    def __init__(self, root: Path | str) -> None:
        # absolute(), not resolve(): a root reached through a symbolic link stays as the
        # user wrote it in messages.
        self.root = Path(root).expanduser().absolute()

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalFolder({str(self.root)!r})"

    # -- writing -------------------------------------------------------------------

    def put_file(
        self, key: str, path: Path, *, metadata: dict[str, str] | None = None
    ) -> ObjectInfo:
        check_key(key)
        meta = check_metadata(metadata)
        with _open_source(Path(path)) as source:

            def copy(sink: Sink) -> None:
                while block := _read_source(source, path):
                    sink(block)

            return self._write(key, copy, meta)

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        metadata: dict[str, str] | None = None,
        size_hint: int | None = None,
    ) -> ObjectInfo:
        check_key(key)
        meta = check_metadata(metadata)

        def copy(sink: Sink) -> None:
            for chunk in chunks:
                sink(chunk)

        return self._write(key, copy, meta)

    def copy(self, source_key: str, target_key: str) -> None:
        source_path = self._path(source_key)
        self._path(target_key)  # checks the key before anything is read
        metadata = self._read_sidecar(source_key, source_path)
        try:
            source = source_path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
            raise ObjectNotFound(f"{self.url}: no object {source_key!r} to copy") from error
        except OSError as error:
            raise self._error("read", source_key, error) from error
        with source:
            if source_key == target_key:
                return  # copying an object onto itself changes nothing

            def copy(sink: Sink) -> None:
                while block := _read_source(source, source_key):
                    sink(block)

            self._write(target_key, copy, metadata)

    def delete(self, key: str) -> None:
        path = self._path(key)
        for victim in (path, _sidecar(path)):
            try:
                victim.unlink()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                pass  # absent already (or a folder, which is no object)
            except OSError as error:
                raise self._error("delete", key, error) from error

    # -- reading -------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            if not stat_mode.S_ISREG(path.stat().st_mode):
                raise ObjectNotFound(f"{self.url}: no object {key!r}")
            return path.open("rb")
        except (FileNotFoundError, NotADirectoryError) as error:
            raise ObjectNotFound(f"{self.url}: no object {key!r}") from error
        except OSError as error:
            raise self._error("read", key, error) from error

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            status = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            raise self._error("read", key, error) from error
        if not stat_mode.S_ISREG(status.st_mode):
            return None
        return _info(key, status, self._read_sidecar(key, path))

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        check_prefix(prefix)
        # Only the folder that the prefix's folder part names can hold matches.
        folder, _, _ = prefix.rpartition("/")
        start = self.root.joinpath(*folder.split("/")) if folder else self.root
        found = [
            _info(key, status, None)
            for key, status in self._walk(start, folder)
            if key.startswith(prefix)
        ]
        return sorted(found, key=lambda info: info.key)

    # -- helpers -------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def _walk(self, folder: Path, relative: str) -> Iterator[tuple[str, os.stat_result]]:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as error:
            raise DestinationError(
                f"{self.url}: cannot list {relative or '/'}: {_reason(error)}"
            ) from error
        for entry in entries:
            key = f"{relative}/{entry.name}" if relative else entry.name
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(Path(entry.path), key)
            elif entry.is_file(follow_symlinks=False) and not is_hidden(key):
                try:
                    check_key(key)
                except InvalidKey:
                    logger.debug("%s: %r is not an object key; not listed", self.url, key)
                    continue
                yield key, entry.stat(follow_symlinks=False)

    def _write(
        self, key: str, write: Callable[[Sink], None], metadata: dict[str, str]
    ) -> ObjectInfo:
        """Run ``write`` into a temporary file, then make it the object under ``key``.
        Exceptions raised by ``write`` itself (a caller's iterator) pass unchanged."""
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(
                prefix=f".{target.name}{TEMP_MARKER}", dir=target.parent
            )
        except OSError as error:
            raise self._error("write", key, error) from error
        temp_path = Path(temporary)
        try:
            with os.fdopen(handle, "wb") as out:

                def sink(chunk: bytes) -> None:
                    try:
                        out.write(chunk)
                    except OSError as error:
                        raise self._error("write", key, error) from error

                write(sink)
                try:
                    out.flush()
                    os.fsync(out.fileno())
                except OSError as error:
                    raise self._error("write", key, error) from error
            try:
                self._write_sidecar(target, metadata)
                os.replace(temp_path, target)
                sync_folder(target.parent)
                status = target.stat()
            except OSError as error:
                raise self._error("write", key, error) from error
        except BaseException:
            with contextlib.suppress(OSError):
                temp_path.unlink()
            raise
        return _info(key, status, metadata)

    def _write_sidecar(self, target: Path, metadata: dict[str, str]) -> None:
        sidecar = _sidecar(target)
        if not metadata:
            with contextlib.suppress(FileNotFoundError):
                sidecar.unlink()
            return
        handle, temporary = tempfile.mkstemp(
            prefix=f".{sidecar.name}{TEMP_MARKER}", dir=target.parent
        )
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(metadata, out, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, sidecar)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def _read_sidecar(self, key: str, path: Path) -> dict[str, str]:
        try:
            text = _sidecar(path).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except OSError as error:
            raise self._error("read the metadata of", key, error) from error
        try:
            metadata = json.loads(text)
            return check_metadata(metadata if isinstance(metadata, dict) else {"": ""})
        except (ValueError, DestinationError) as error:
            raise DestinationError(
                f"{self.url}: the metadata file of {key!r} is damaged"
            ) from error

    def _error(self, action: str, key: str, error: OSError) -> DestinationError:
        return DestinationError(f"{self.url}: cannot {action} {key!r}: {_reason(error)}")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _info(key: str, status: os.stat_result, metadata: dict[str, str] | None) -> ObjectInfo:
    modified = datetime.fromtimestamp(status.st_mtime, UTC)
    return ObjectInfo(key=key, size=status.st_size, modified=modified, metadata=metadata)


def _open_source(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as error:
        raise DestinationError(f"cannot read {path}: {_reason(error)}") from error


def _read_source(source: BinaryIO, name: object) -> bytes:
    try:
        return source.read(_COPY_BUFFER)
    except OSError as error:
        raise DestinationError(f"cannot read {name}: {_reason(error)}") from error


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__
