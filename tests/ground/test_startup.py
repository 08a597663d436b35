"""What a backup loads before it asks the server for anything: each module is a wait in
front of the first document (issue 15), so a plain backup must not load what only other
commands or options use; those import it where they use it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# Module -> what needs it.
ONLY_SOMETIMES = {
    "obstore": "object stores (--dest s3://, gs://, az://)",
    "mongo_backup.destinations.objectstore": "object stores",
    "pyrage": "--encrypt-to",
    "tomllib": "--config files",
    "dotenv": "a .env file in the working folder",
    "getpass": "the password prompt",
    "mongo_backup.restore.options": "restore",
    "mongo_backup.location.retention": "list, prune and watch durations",
    "mongo_backup.location.catalog": "--dest",
    "mongo_backup.archive.chain": "increments",
    "mongo_backup.mongo.users": "--users-and-roles",
    "mongo_backup.backup.live_archive": "--stream and --archive -",
}


def loaded_by(code: str, folder: Path) -> set[str]:
    program = f"import json, sys; {code}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", program], cwd=folder, capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


def test_a_plain_backup_loads_only_what_it_uses(tmp_path: Path) -> None:
    loaded = loaded_by("import mongo_backup.cli.main, mongo_backup.backup.run", tmp_path)
    assert "mongo_backup.backup.run" in loaded
    assert {name: ONLY_SOMETIMES[name] for name in loaded & set(ONLY_SOMETIMES)} == {}


def test_what_it_leaves_out_is_there_when_asked_for(tmp_path: Path) -> None:
    """The lazily loaded names still resolve where the code asks for them."""
    code = (
        "from mongo_backup.destinations import MemoryDestination, ObjectStoreDestination, "
        "StoreSettings, open_destination; "
        "open_destination('s3://bucket/prefix', endpoint_url='http://127.0.0.1:9')"
    )
    loaded = loaded_by(code, tmp_path)
    assert {"obstore", "mongo_backup.destinations.objectstore"} <= loaded


def test_a_command_builds_its_own_parser_alone_and_reads_the_same() -> None:
    """A run builds the subparser of its command only; what it prints for help and for
    a bad flag is what the parser of every command prints."""
    import contextlib
    import io

    from mongo_backup.cli.main import COMMANDS, build_parser

    for names in COMMANDS.values():
        for name in names:
            alone, whole = build_parser(name), build_parser()
            for argv in ([name, "--help"], [name, "--no-such-flag"]):
                printed = []
                for parser in (alone, whole):
                    out, err = io.StringIO(), io.StringIO()
                    with (
                        contextlib.redirect_stdout(out),
                        contextlib.redirect_stderr(err),
                        contextlib.suppress(SystemExit),
                    ):
                        parser.parse_args(argv)
                    printed.append((out.getvalue(), err.getvalue()))
                assert printed[0] == printed[1], argv
