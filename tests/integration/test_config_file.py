"""``--config FILE --profile NAME``: settings from TOML, flags over the file, secrets kept
out of readable files, ``${VAR}`` expansion, and ``config show`` with secrets hidden."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from conftest import CliRunner

SECRET = "s3cr3t-in-config"


def config(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "mongo-backup.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_profile_backs_up_and_flags_win(
    cli: CliRunner, client: MongoClient[Any], mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    client[db_name].items.insert_many([{"_id": i} for i in range(5)])
    path = config(
        tmp_path,
        f"""
uri = "{mongo_uri}"
out-dir = "{tmp_path / "top"}"

[profile.nightly]
db = "{db_name}"
compress = "gzip"
out_dir = "{tmp_path / "nightly"}"
keep-daily = 7         # a prune setting: ignored by backup
encrypt-to = []
""",
        mode=0o644,  # no secret in it: readable is fine
    )
    result = cli("backup", "--config", path, "--profile", "nightly", "-q")
    assert result.code == 0, result.err
    assert result.out.strip().endswith(".tar.gz") and "/nightly/" in result.out
    flags = cli("backup", "--config", path, "--profile", "nightly", "--compress", "none", "-q")
    assert flags.code == 0 and flags.out.strip().endswith(".tar")
    assert not (tmp_path / "top").exists()


@pytest.mark.parametrize(
    ("text", "mode", "message"),
    [
        (f'uri = "mongodb://u:{SECRET}@h/"\n', 0o644, "holds a secret (uri (with a password))"),
        (f'password = "{SECRET}"\n', 0o640, "but others may read it (mode 0640)"),
        ('db = "${MB_TEST_UNSET_VARIABLE}"\n', 0o600, "uses ${MB_TEST_UNSET_VARIABLE}"),
        ("colour = 1\n", 0o600, "no command has a setting named colour"),
        ('compress = "lz4"\n', 0o600, "'lz4' is not one of none, gzip, zstd"),
        ("batch-size = true\n", 0o600, "batch_size takes one value"),
        ("pretty = 1\n", 0o600, "pretty is a switch: true or false"),
        ("jobs = 'many'\n", 0o600, "invalid int value"),
        ("x = [\n", 0o600, "is not valid TOML"),
        ("[profile]\nnightly = 1\n", 0o600, "profile"),
    ],
)
def test_bad_config_files_are_one_line(
    cli: CliRunner, tmp_path: Path, text: str, mode: int, message: str
) -> None:
    path = config(tmp_path, text, mode)
    result = cli("backup", "--config", path, "--out-dir", tmp_path / "o")
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mongo-backup: error:"), result.err
    assert message in lines[0]
    assert SECRET not in result.err + result.out
    assert not (tmp_path / "o").exists()


def test_missing_files_and_profiles(cli: CliRunner, tmp_path: Path) -> None:
    missing = cli("backup", "--config", tmp_path / "none.toml")
    assert missing.code == 2 and "cannot read the config file" in missing.err
    path = config(tmp_path, "[profile.a]\n[profile.b]\n")
    wrong = cli("list", tmp_path, "--config", path, "--profile", "c")
    assert wrong.code == 2 and "has no [profile.c] (profiles: a, b)" in wrong.err
    alone = cli("list", tmp_path, "--profile", "a")
    assert alone.code == 2 and "give --config FILE" in alone.err


def test_config_show_expands_and_hides_secrets(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MB_TEST_DB", "shop")
    path = config(
        tmp_path,
        f"""
uri = "mongodb://backup:{SECRET}@db1:27017/?replicaSet=rs0"
password = "{SECRET}"
[profile.nightly]
db = "${{MB_TEST_DB}}"
interval = 30
""",
    )
    shown = cli("config", "show", "--config", path, "--profile", "nightly")
    assert shown.code == 0, shown.err
    assert SECRET not in shown.out
    assert 'db = "shop"' in shown.out and "interval = 30" in shown.out
    assert 'password = "***"' in shown.out and "mongodb://***@db1:27017" in shown.out
    as_json = json.loads(cli("config", "show", "--config", path, "--json").out)
    assert as_json["password"] == "***" and "db" not in as_json
    assert cli("config", "show").code == 2
