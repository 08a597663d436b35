"""A real S3 HTTP API on loopback for the tests: moto's server, one per test session.

Reuse from any test module::

    from s3tools import moto_s3_fixture  # noqa: F401  (registers the fixture moto_s3)

    def test_something(moto_s3: MotoS3) -> None:
        destination = open_destination(moto_s3.fresh_url(), endpoint_url=moto_s3.endpoint_url)

The fixture sets ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` to :data:`ACCESS_KEY_ID` and
:data:`SECRET_ACCESS_KEY` (moto takes any credentials; these are unique strings, so that a
test can look for them in whatever the tool printed, logged or wrote: see
:func:`credential_leaks`) and ``AWS_REGION`` (``us-east-1``) for the session, starts
``ThreadedMotoServer`` on
127.0.0.1 and a free port, and creates the bucket ``mongo-backup-tests``. Each test
takes its own prefix (``fresh_url()``), so tests share the server but not objects.
``stop()`` and ``restart()`` take the server away and bring it back on the same port
with the same objects and pending uploads: moto keeps its state in the process, not in
the server thread. ``client()`` is a boto3 client, the independent witness of what
really reached the store (metadata headers, pending multipart uploads, ETags).
"""

from __future__ import annotations

import logging
import os
import traceback
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from authtools import leaks, unpacked, written_contents
from mongo_backup.destinations import StoreSettings
from mongo_backup.retry import RetryPolicy

BUCKET = "mongo-backup-tests"
REGION = "us-east-1"
# The session's S3 credentials: unique strings, found nowhere but where they leaked to.
# Letters and digits only, so that a URL, a quoted URL or a JSON string carries them
# whole (a "/" or "+" would be cut or escaped, and a leak of a part would go unseen).
ACCESS_KEY_ID = "AKIAMBTESTQ7X2ZP9LWV"
SECRET_ACCESS_KEY = "mbTestSecretKey0q7Zx2Lw9Vn4Rt8Yk3Jd6Hf1G"
CREDENTIALS = [ACCESS_KEY_ID, SECRET_ACCESS_KEY]


@dataclass
class MotoS3:
    port: int
    bucket: str = BUCKET
    _server: ThreadedMotoServer | None = field(default=None, repr=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )

    def fresh_url(self) -> str:
        """``s3://BUCKET/t-RANDOM``: a location no other test uses."""
        return f"s3://{self.bucket}/t-{uuid.uuid4().hex[:12]}"

    def settings(self, **changes: Any) -> StoreSettings:
        """Settings for tests: 5 MiB parts (the stores' minimum), short timeouts, and
        quick retries, so that a failure shows within seconds."""
        values: dict[str, Any] = {
            "part_size": 5 * 1024 * 1024,
            "connect_timeout": 2.0,
            "request_timeout": 30.0,
            "request_retries": 1,
            "retry_timeout": 10.0,
            "retry": RetryPolicy(retries=2, base_delay=0.05, max_delay=0.2),
        }
        values.update(changes)
        return StoreSettings(**values)

    def contents(self, prefix: str) -> dict[str, bytes]:
        """{label: bytes} of every object under ``prefix`` (its metadata too), unpacked
        like :func:`authtools.written_contents`."""
        client, found = self.client(), {}
        for key in self.keys(prefix):
            stored = client.get_object(Bucket=self.bucket, Key=key)
            found[f"s3:{key} metadata"] = repr(stored.get("Metadata", {})).encode()
            found.update(unpacked(f"s3:{key}", stored["Body"].read()))
        return found

    def keys(self, prefix: str) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def pending_uploads(self, prefix: str) -> list[str]:
        """Keys of multipart uploads begun under ``prefix`` and neither completed nor
        aborted."""
        listing = self.client().list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        return [upload["Key"] for upload in listing.get("Uploads", [])]

    def clear(self, prefix: str) -> None:
        """Remove every object and pending upload under ``prefix`` (moto holds them in
        this process's memory)."""
        client = self.client()
        for key in self.keys(prefix):
            client.delete_object(Bucket=self.bucket, Key=key)
        listing = client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        for upload in listing.get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )

    def start(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def restart(self) -> None:
        """Back on the same port, with the same objects (see the module docstring)."""
        if self._server is None:
            self.start()


# Named through ``name=`` so that a test module imports ``moto_s3_fixture`` and asks for
# ``moto_s3``: a parameter named like an imported function would shadow it (ruff F811).
@pytest.fixture(scope="session", name="moto_s3")
def moto_s3_fixture() -> Iterator[MotoS3]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        patch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        patch.setenv("AWS_REGION", REGION)
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        # Settings from the developer's own machine must not redirect the tests.
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"):
            patch.delenv(name, raising=False)
        server = MotoS3(port=0)
        server.start()  # port 0: the system picks a free port, start() reads it back
        try:
            server.client().create_bucket(Bucket=server.bucket)
            yield server
        finally:
            server.stop()


@pytest.fixture(name="s3")
def quiet_s3_fixture(moto_s3: MotoS3) -> Iterator[MotoS3]:
    """The session's moto server (its distinctive credentials in the environment), its
    access log quiet: moto's server runs in this process, and its log would reach the
    CLI's stderr."""
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET_ACCESS_KEY
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.WARNING)
    try:
        yield moto_s3
    finally:
        werkzeug.setLevel(level)


# --- looking for the credentials -----------------------------------------------------


class _Records(logging.Handler):
    """Keeps each record's message and traceback, unformatted: what any handler a
    program installs would get, before the CLI's scrubbing formatter."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        self.texts.append(f"{record.name} {record.levelname} {text}")


@contextmanager
def log_records(logger: str = "mongo_backup") -> Iterator[list[str]]:
    """The records ``logger`` (and its children) emit in the block, as texts. Attached to
    the package logger, not the root: the CLI replaces the root's handlers."""
    handler = _Records()
    target = logging.getLogger(logger)
    target.addHandler(handler)
    try:
        yield handler.texts
    finally:
        target.removeHandler(handler)


def credential_leaks(
    texts: dict[str, str | bytes] | None = None,
    records: Iterable[str] = (),
    paths: Iterable[Path] = (),
    stores: Iterable[tuple[MotoS3, str]] = (),
) -> list[str]:
    """Where the session's S3 credentials show: in ``texts`` ({label: output}), log
    ``records`` (see :func:`log_records`), the files under ``paths`` and the objects
    under each (server, prefix) of ``stores``, archives unpacked. Empty if nowhere."""
    found: dict[str, bytes] = {}
    for label, text in (texts or {}).items():
        found[label] = text.encode() if isinstance(text, str) else text
    for number, record in enumerate(records):
        found[f"log record {number}"] = record.encode()
    found.update(written_contents(*(path for path in paths if path.exists())))
    for server, prefix in stores:
        found.update(server.contents(prefix))
    return leaks(CREDENTIALS, found)
