"""``backup --stream --dest s3://...`` against moto's S3 server: the archive goes up in
its streamed form while the backup runs, and what only the end knows (a failed
collection) reaches ``list`` through the sidecar's metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import CliRunner
from damagetools import members_of
from resiliencetools import fail_point
from s3tools import MotoS3, moto_s3_fixture, quiet_s3_fixture  # noqa: F401  (fixtures)


def test_a_streamed_upload_with_a_failed_collection(
    cli: CliRunner, client: Any, mongo_uri: str, db_name: str, target_db: str,
    s3: MotoS3, tmp_path: Path,
) -> None:  # fmt: skip
    db = client[db_name]
    db.a_first.insert_one({"_id": 1})
    db.b_second.insert_many([{"_id": i, "n": i} for i in range(50)])
    location = s3.fresh_url()
    dest = ["--dest", location, "--endpoint-url", s3.endpoint_url]
    # The fail point names a_first: its find fails once, b_second is read as usual.
    failing = {"failCommands": ["find"], "errorCode": 2, "namespace": f"{db_name}.a_first"}
    with fail_point(client, {"times": 1}, **failing):
        result = cli(
            "backup", "--uri", mongo_uri, "--db", db_name, "--out-dir", tmp_path / "out",
            "-j", "1", "-q", "--stream", *dest,
        )  # fmt: skip
    assert result.code == 3, result.err
    url = result.out.strip()
    key = url.split("://", 1)[1].split("/", 1)[1]
    assert sorted(s3.keys(key)) == [key, key + ".sha256"]
    assert not (tmp_path / "out" / "backup_data").exists(), "--stream writes no archive file"

    # The streamed form: the plan first, the manifest last.
    stored = s3.client().get_object(Bucket=s3.bucket, Key=key)
    copy = tmp_path / "copy.tar.zst"
    copy.write_bytes(stored["Body"].read())
    names = [name for name, _ in members_of(copy)]
    assert names[0] == "plan.json" and names[-1] == "manifest.json", names
    # The object was begun before the end; its sidecar was written after it.
    assert stored["Metadata"]["mb_failed"] == "0"
    sidecar = s3.client().head_object(Bucket=s3.bucket, Key=key + ".sha256")
    assert sidecar["Metadata"]["mb_failed"] == "1"

    listed = cli("list", location, "--endpoint-url", s3.endpoint_url, "--json")
    assert listed.code == 0, listed.err
    [backup] = json.loads(listed.out)
    assert backup["status"] == "1 collection(s) failed", backup

    restored = cli(
        "restore", url, "--endpoint-url", s3.endpoint_url, "--uri", mongo_uri,
        "--db", target_db, "-q",
    )  # fmt: skip
    assert restored.code == 3, restored.err  # the backup's failed collection
    assert client[target_db].b_second.count_documents({}) == 50
    s3.clear(key)
