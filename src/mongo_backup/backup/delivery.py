"""Delivering a finished backup: encryption (``--encrypt-to``) and the upload to a
destination (``--dest``) of the archive file; and :func:`encrypting`, age on a thread
between an archive's writer and its output, for an archive sent while the backup runs
(:mod:`.pipe_sender`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pyrage

from ..archive.encryption import SUFFIX as AGE_SUFFIX
from ..archive.encryption import encrypt_file
from ..archive.manifest import Manifest
from ..destinations import open_destination
from ..location.transfer import metadata_for, upload_file

logger = logging.getLogger(__name__)


def deliver_file(
    archive: Path,
    manifest: Manifest,
    *,
    dest: str | None,
    endpoint_url: str | None,
    recipients: list[Any],
    keep_local: bool,
) -> tuple[Path | None, str | None]:
    """Encrypt and/or upload a written archive: (the local file left, the URL)."""
    path = archive
    if recipients:
        encrypted = archive.with_name(archive.name + AGE_SUFFIX)
        encrypt_file(archive, encrypted, recipients)
        archive.unlink()
        path = encrypted
        logger.info("encrypted to %d recipient(s): %s", len(recipients), path)
    if dest is None:
        return path, None
    destination = open_destination(dest, endpoint_url=endpoint_url)
    url = upload_file(destination, path, path.name, metadata_for(manifest, bool(recipients)))
    if keep_local:
        return path, url
    path.unlink()
    return None, url


def encrypting(
    produce: Callable[[IO[bytes]], None], recipients: list[Any]
) -> Callable[[IO[bytes]], None]:
    """``produce``, its output encrypted with age on the way (through a pipe)."""

    def encrypted(out: IO[bytes]) -> None:
        read_end, write_end = os.pipe()
        failure: list[BaseException] = []

        def feed() -> None:
            with os.fdopen(write_end, "wb") as pipe:
                try:
                    produce(pipe)
                except BaseException as error:
                    failure.append(error)

        feeder = threading.Thread(target=feed, name="archive-plain", daemon=True)
        feeder.start()
        with os.fdopen(read_end, "rb") as pipe:
            pyrage.encrypt_io(pipe, out, recipients)
        feeder.join()
        if failure:
            raise failure[0]

    return encrypted
