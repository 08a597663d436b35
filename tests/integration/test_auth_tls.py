"""Authentication and TLS end to end: SCRAM users with the least roles, every way of giving
a password, failures that leak nothing, TLS with generated certificates, X.509 users;
then the pure functions that put credentials into the URI (config.with_auth,
config.password_from).

The servers are this module's own (users and certificates must be configured), so the
server tests skip when MONGO_TEST_URI points the suite at an outside server.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure
from pymongo.uri_parser import parse_uri

from authtools import (
    DST,
    LEGACY,
    READER,
    RESTORER,
    SPACED,
    SRC,
    AuthServer,
    TlsServers,
    User,
    leaks,
    login,
    make_pki,
    nothing_in,
    password_file,
    round_trip,
    written_contents,
    x509_server,
)
from conftest import CliResult, CliRunner
from mongo_backup.cli.config import AuthOptions, password_from, with_auth
from mongo_backup.errors import ConfigError
from mongo_backup.mongo.embedded import free_port
from mongo_backup.restore.namespaces import Restorer
from restoretools import assert_single_error_line, user_collections
from serverfeatures import lacks

# The module, not the function that mongo_backup/__init__ re-exports under the same name.
backup_module = importlib.import_module("mongo_backup.backup.run")
WRONG = "Wr0ng-Pw-zz9"


def own_servers_only() -> None:
    if os.environ.get("MONGO_TEST_URI"):
        lacks("own-servers", "needs servers configured with users and TLS (MONGO_TEST_URI set)")


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    own_servers_only()
    with AuthServer.running(tmp_path_factory.mktemp("auth") / "db") as server:
        yield server


@pytest.fixture
def archive(cli: CliRunner, auth: AuthServer, tmp_path: Path) -> Path:
    made = cli("backup", "--uri", auth.uri_for(READER), "--db", SRC, "--out-dir", tmp_path / "a")
    assert made.code == 0, made.err
    for name in ("items", "notes"):
        auth.admin[DST].drop_collection(name)
    return Path(made.out.strip())


# --- 1: backup and restore as least-privileged users -----------------------------------


@pytest.mark.parametrize("how", ["uri", "file", "env", "dotenv", "auth-source", "sha256", "sha1"])
def test_backup_and_restore_with_least_privileged_users(
    cli: CliRunner, auth: AuthServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    reader, writer = (LEGACY, LEGACY) if how == "sha1" else (READER, RESTORER)
    backup, restore = login(auth, reader, how, tmp_path), login(auth, writer, how, tmp_path)
    as_reader, as_writer = (lambda: backup.use(monkeypatch)), (lambda: restore.use(monkeypatch))
    round_trip(cli, auth.admin, tmp_path / "out", as_reader, as_writer)


def test_auth_source_mechanism_and_roles_matter(
    cli: CliRunner, auth: AuthServer, tmp_path: Path
) -> None:
    """The counter-proofs of the cases above: without them the same logins fail."""
    no_source = login(auth, READER, "auth-source", tmp_path).options[:-2]  # no --auth-source
    sha256 = login(auth, LEGACY, "sha256", tmp_path).options  # a SHA-1-only user
    no_role = ["--uri", auth.uri_for(RESTORER)]  # a user without the read role on SRC
    for options, says in ((no_source, "auth"), (sha256, "auth"), (no_role, "not authorized")):
        result = cli("backup", *options, "--db", SRC, "--out-dir", tmp_path / "out")
        assert result.code == 1
        assert says in assert_single_error_line(result).lower()
    assert nothing_in(tmp_path / "out")


def test_prompts_on_a_terminal_only(
    cli: CliRunner, auth: AuthServer, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MONGO_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    user_only = auth.uri_for(READER).replace(":" + urllib.parse.quote(READER.password), "")
    for user_options in (["--uri", auth.uri, "-u", READER.name], ["--uri", user_only]):
        result = cli("backup", *user_options, "--db", SRC, "--out-dir", "o")
        assert result.code == 2
        assert "--password-file" in assert_single_error_line(result)
    assert not (clean_env / "o").exists()

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    asked: list[str] = []
    monkeypatch.setattr("sys.stdin", Terminal(""))
    monkeypatch.setattr("getpass.getpass", lambda prompt: asked.append(prompt) or READER.password)
    result = cli("backup", "--uri", auth.uri, "-u", READER.name, "--db", SRC, "--out-dir", "o")
    assert result.code == 0, result.err
    assert asked == [f"password for {READER.name}: "]


# --- 2: refused logins and missing roles -----------------------------------------------


@pytest.mark.parametrize("verbose", [False, True], ids=["plain", "verbose"])
@pytest.mark.parametrize("who", ["wrong-password", "unknown-user"])
def test_failed_login_writes_and_restores_nothing(
    cli: CliRunner, auth: AuthServer, tmp_path: Path, archive: Path, who: str, verbose: bool
) -> None:
    user = User(READER.name, WRONG) if who == "wrong-password" else User("nobody-x1", WRONG)
    extra = ["-v"] if verbose else []
    by_file = ["-u", user.name, "--password-file", str(password_file(tmp_path / "pw", user))]
    for user_options in (["--uri", auth.uri_for(user)], ["--uri", auth.uri, *by_file]):
        failed = cli("backup", *user_options, "--db", SRC, "--out-dir", tmp_path / "out", *extra)
        refused = cli("restore", archive, *user_options, "--db", DST, *extra)
        for result in (failed, refused):
            assert result.code == 1 and result.out == ""
            if verbose:
                assert "Traceback" in result.err
                assert result.err.splitlines()[-1].startswith("mongo-backup: error:")
            else:
                assert_single_error_line(result)
            assert WRONG not in result.err and user.name not in result.err
        assert nothing_in(tmp_path / "out")
        assert user_collections(auth.admin, DST) == []


def test_restore_without_the_write_roles_is_refused(
    cli: CliRunner, auth: AuthServer, archive: Path
) -> None:
    restored = cli("restore", archive, "--uri", auth.uri_for(READER), "--db", DST)
    assert restored.code == 1
    line = assert_single_error_line(restored)
    assert user_collections(auth.admin, DST) == []
    assert "not authorized" in line and "unexpected" not in line and "full error" not in line


def test_users_and_roles_without_the_right_to_see_them_is_refused_before_any_data(
    cli: CliRunner, auth: AuthServer, tmp_path: Path
) -> None:
    """READER may read src's documents, not its users: one line, exit 1, nothing kept."""
    result = cli(
        "backup", "--uri", auth.uri_for(READER), "--db", SRC, "--out-dir", tmp_path / "out",
        "--users-and-roles", "-q",
    )  # fmt: skip
    assert result.code == 1, result.err
    line = assert_single_error_line(result)
    assert "--users-and-roles: cannot read the users and roles of 'src'" in line
    assert "not authorized" in line and READER.password not in result.err
    assert nothing_in(tmp_path / "out")


# --- 3: no secret in anything the tool printed or wrote --------------------------------


def test_no_secret_in_anything_printed_or_written(
    cli: CliRunner, auth: AuthServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, state = tmp_path / "out", Path(os.environ["MONGO_BACKUP_STATE_DIR"])
    as_reader = ["-u", READER.name, "--password-file", str(password_file(tmp_path, READER))]
    restorer_file = str(password_file(tmp_path, RESTORER))
    as_restorer = ["-u", RESTORER.name, "--password-file", restorer_file, "--auth-source", DST]
    results: list[CliResult] = []

    def run(code: int, *argv: str | Path) -> str:
        results.append(cli(*argv))
        assert results[-1].code == code, results[-1].err
        return results[-1].out.strip()

    def backup(code: int, *options: str) -> str:
        return run(code, "backup", "--db", SRC, "--out-dir", out, *options)

    archives = [backup(0, "--uri", auth.uri_for(READER), "-v", "--keep-folder")]
    made = backup(0, "--uri", auth.uri, *as_reader, "--json", "--compress", "gzip")
    archives.append(json.loads(made)["archive"])
    monkeypatch.setenv("MONGO_PASSWORD", READER.password)
    by_env = ["-vv", "--log-format", "json", "--compress", "none", "--keep-folder"]
    archives.append(backup(0, "--uri", auth.uri, "-u", READER.name, *by_env))
    monkeypatch.delenv("MONGO_PASSWORD")
    backup(0, "--uri", auth.uri, "-u", READER.name, "--password", READER.password, "-q")
    assert "process list" in results[-1].err and results[-1].err.count("\n") == 1  # a warning
    for archive in archives:
        run(0, "verify", archive, "-v")
        run(0, "inspect", archive)
        run(0, "inspect", archive, "--json")
    run(0, "verify", archives[0], "--against-uri", auth.uri_for(READER), "--against-db", SRC)
    restore = ("restore", archives[0], "--db", DST, "--drop")
    run(0, *restore, "--uri", auth.uri_for(RESTORER), "-v")
    run(0, *restore, "--uri", auth.uri, *as_restorer, *["--json", "-vv", "--log-format", "json"])
    run(0, *restore, "--uri", auth.uri_for(RESTORER), "--dry-run")
    # Failures: a database the user may not read, a wrong password, no server.
    for flags in ([], ["-v"], ["-vv", "--log-format", "json"]):
        backup(1, "--uri", auth.uri_for(READER), "--db", "other", *flags)
        backup(1, "--uri", auth.uri_for(User(READER.name, WRONG)), *flags)
        run(1, *restore, "--uri", auth.uri_for(User(RESTORER.name, WRONG, DST)), *flags)
    nobody = f"127.0.0.1:{free_port()}"
    no_server = auth.uri_for(READER).replace(f"127.0.0.1:{auth.server.port}", nobody)
    backup(1, "--uri", no_server, *["--timeout", "0.5", "-vv", "--log-format", "json"])
    backup(1, "--uri", f"mongodb://{nobody}/", *as_reader, *["--timeout", "0.5", "-v"])
    # Interrupted: the working folder (with its checkpoints) and the restore state stay.
    with monkeypatch.context() as patch:
        patch.setattr(backup_module, "write_archive", _interrupt)
        backup(130, "--uri", auth.uri, *as_reader, "-v")
        patch.setattr(Restorer, "_build_indexes", _interrupt)
        run(130, *restore, "--uri", auth.uri, *as_restorer, "-v")
    written = written_contents(out, state)
    for number, result in enumerate(results):
        written[f"run {number} output"] = f"{result.out}\n{result.err}".encode()
    labels = "\n".join(written)
    seen = (".tar.zst!unpacked!manifest.json", ".tar.gz!unpacked!items.jsonl", ".tar!notes.jsonl")
    for expected in (*seen, "checkpoint.json", ".jsonl.zst!unpacked", f"{state}/restores/"):
        assert expected in labels, f"nothing scanned matches {expected!r}:\n{labels}"
    needles = [READER.name, RESTORER.name]
    for password in (READER.password, RESTORER.password, WRONG):
        needles += [password, urllib.parse.quote(password, safe=""), urllib.parse.quote(password)]
    assert leaks(needles, written) == []


def _interrupt(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt


def test_unencoded_space_in_a_uri_password_never_leaks(
    cli: CliRunner, auth: AuthServer, tmp_path: Path
) -> None:
    """The driver accepts ``user:pass word@host``; nothing may show ``user:pass``."""
    raw = f"mongodb://{SPACED.name}:{SPACED.password}@127.0.0.1:{auth.server.port}/"
    options = ("--db", SRC, "--out-dir", tmp_path / "out", "--compress", "none", "-v")
    no_server = raw.replace(str(auth.server.port), str(free_port()))
    made = cli("backup", "--uri", raw + "?directConnection=true", *options)
    results = [made, cli("backup", "--uri", no_server, *options, "--timeout", "0.5")]
    assert [result.code for result in results] == [0, 1], results
    written = written_contents(tmp_path / "out")
    written.update({f"run {n}": r.out.encode() + r.err.encode() for n, r in enumerate(results)})
    assert leaks([SPACED.name, *SPACED.password.split()], written) == []


# --- 4: TLS ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServers]:
    own_servers_only()
    with TlsServers.running(make_pki(tmp_path_factory.mktemp("tls") / "certs with spaces")) as s:
        yield s


@pytest.mark.parametrize("how", ["flags", "ca-file-flag-only", "uri"])
def test_tls_backup_and_restore(cli: CliRunner, tls: TlsServers, tmp_path: Path, how: str) -> None:
    ca = str(tls.pki.ca)
    options = {
        "flags": ["--uri", tls.uri(tls.good), "--tls", "--tls-ca-file", ca],
        "ca-file-flag-only": ["--uri", tls.uri(tls.good), "--tls-ca-file", ca],
        "uri": ["--uri", tls.uri(tls.good, f"&tls=true&tlsCAFile={urllib.parse.quote(ca)}")],
    }[how]
    round_trip(cli, tls.admin, tmp_path, lambda: options, lambda: options)


def test_tls_refusals_are_one_line(cli: CliRunner, tls: TlsServers, tmp_path: Path) -> None:
    ca, other = str(tls.pki.ca), str(tls.pki.other_ca)
    refused = {
        "untrusted CA": ["--uri", tls.uri(tls.good), "--tls", "--tls-ca-file", other],
        "no TLS": ["--uri", tls.uri(tls.good)],
        "another host's certificate": ["--uri", tls.uri(tls.wrong_host), "--tls-ca-file", ca],
    }
    for what, options in refused.items():
        result = cli("backup", *options, "--db", SRC, "--out-dir", tmp_path / "o", "--timeout", "1")
        assert result.code == 1, (what, result.err)
        line = assert_single_error_line(result)
        assert "127.0.0.1" in line, (what, line)
        assert what == "no TLS" or "certificate" in line.lower(), (what, line)
    assert nothing_in(tmp_path / "o")
    query = f"&tls=true&tlsAllowInvalidHostnames=true&tlsCAFile={urllib.parse.quote(ca)}"
    in_uri = tls.uri(tls.wrong_host, query)
    by_flag = ["--uri", tls.uri(tls.wrong_host), "--tls-ca-file", ca]
    for allowed in ([*by_flag, "--tls-allow-invalid-hostnames"], [by_flag[0], in_uri]):
        result = cli("backup", *allowed, "--db", SRC, "--out-dir", tmp_path, "--allow-empty")
        assert result.code == 0, result.err


@pytest.fixture(scope="module")
def x509(tls: TlsServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with contextlib.ExitStack() as stack:
        try:
            store = tmp_path_factory.mktemp("x509") / "db"
            uri = stack.enter_context(x509_server(tls.pki, store))
        except OperationFailure as error:
            lacks("x509-users", error)
        yield uri


def test_x509_authentication(cli: CliRunner, tls: TlsServers, x509: str, tmp_path: Path) -> None:
    anonymous = ["--uri", x509, "--tls-ca-file", str(tls.pki.ca)]
    client_cert = ["--tls-certificate-key-file", str(tls.pki.client)]
    options = [*anonymous, *client_cert, "--auth-mechanism", "MONGODB-X509"]
    files = {"tlsCAFile": str(tls.pki.ca), "tlsCertificateKeyFile": str(tls.pki.client)}
    with MongoClient(x509, tls=True, authMechanism="MONGODB-X509", **files) as client:
        round_trip(cli, client, tmp_path, lambda: options, lambda: options)
    for refused in (anonymous, [*anonymous, *client_cert]):  # no user, or mutual TLS only
        result = cli("backup", *refused, "--db", SRC, "--out-dir", tmp_path / "no")
        assert result.code == 1
        assert "auth" in assert_single_error_line(result)


# --- 5: config.with_auth and config.password_from --------------------------------------


def test_with_auth_encodes_reserved_characters_and_replaces_uri_credentials() -> None:
    user, password = "ad@m:in/?#[]%", "p@ss:w/o?r#d%[] +&="
    uri = with_auth("mongodb://old:oldpw@h1:1,h2:2/shop?authSource=x", AuthOptions(user, password))
    parsed = parse_uri(uri)
    assert (parsed["username"], parsed["password"]) == (user, password)
    assert parsed["nodelist"] == [("h1", 1), ("h2", 2)] and parsed["database"] == "shop"
    assert parsed["options"]["authSource"] == "x" and "oldpw" not in uri
    kept = parse_uri(with_auth("mongodb://u:p%40@[::1]:5/", AuthOptions(auth_source="admin")))
    assert (kept["username"], kept["password"], kept["nodelist"]) == ("u", "p@", [("::1", 5)])


def test_with_auth_overrides_options_case_insensitively_and_keeps_the_others() -> None:
    query = "AUTHSOURCE=x&replicaSet=rs&authmechanism=SCRAM-SHA-1&TLS=false&appname=a%26b"
    tags = "&readPreferenceTags=dc:ny&readPreferenceTags="
    flags = AuthOptions(auth_source="admin", auth_mechanism="SCRAM-SHA-256", tls=True)
    uri = with_auth(f"mongodb://h/?{query}{tags}", flags)
    keys = [key.lower() for key, _ in urllib.parse.parse_qsl(uri.partition("?")[2])]
    assert keys.count("authsource") == keys.count("tls") == keys.count("authmechanism") == 1
    options = parse_uri(uri, validate=False)["options"]  # a duplicate option would warn
    wanted = {"authSource": "admin", "authMechanism": "SCRAM-SHA-256", "tls": "true"}
    assert {key: options[key] for key in wanted} == wanted
    assert options["replicaSet"] == "rs" and options["appname"] == "a&b"
    assert options["readPreferenceTags"] == ["dc:ny", ""]
    assert with_auth("mongodb://h/db?w=1", AuthOptions()) == "mongodb://h/db?w=1"


def test_with_auth_keeps_srv_and_file_paths_with_spaces(tmp_path: Path) -> None:
    srv = with_auth("mongodb+srv://c0.example.net/shop?retryWrites=true", AuthOptions("u", "p w"))
    assert srv == "mongodb+srv://u:p%20w@c0.example.net/shop?retryWrites=true"
    folder = tmp_path / "my certs + keys"
    folder.mkdir()
    ca, key = folder / "ca & 1%.pem", folder / "client key.pem"
    ca.write_text("x")
    key.write_text("x")
    flags = AuthOptions(
        tls_ca_file=str(ca), tls_certificate_key_file=str(key), tls_allow_invalid_hostnames=True
    )
    options = parse_uri(with_auth("mongodb://h/?tlsCAFile=/old/ca.pem", flags))["options"]
    assert (options["tlsCAFile"], options["tlsCertificateKeyFile"]) == (str(ca), str(key))
    assert options["tls"] is True and options["tlsAllowInvalidHostnames"] is True


ALIASES = [
    ("ssl=false", AuthOptions(tls=True), {"tls": True}),
    (
        "tlsInsecure=true",
        AuthOptions(tls_allow_invalid_hostnames=True),
        {"tlsAllowInvalidHostnames": True},
    ),
]


@pytest.mark.parametrize(("query", "flags", "expected"), ALIASES)
def test_with_auth_flags_win_over_alias_options(
    query: str, flags: AuthOptions, expected: dict[str, object]
) -> None:
    # Were the alias kept, parse_uri would refuse the URI ("conflicting values" / "cannot
    # be..."); the flag's value is what remains, and nothing else.
    options = parse_uri(with_auth(f"mongodb://h/?{query}", flags))["options"]
    assert dict(options) == expected


def test_password_from_file_flag_environment_dotenv_in_that_order(tmp_path: Path) -> None:
    file, dotenv = tmp_path / "pw", tmp_path / ".env"
    file.write_bytes("pä ss#1\r\nsecond line\n".encode())
    dotenv_pw = "from # dotenv"
    dotenv.write_text(f"MONGO_PASSWORD='{dotenv_pw}'\n")
    env = {"MONGO_PASSWORD": "from-env"}
    assert password_from(flag="f", file=str(file), env=env, dotenv_path=dotenv) == "pä ss#1"
    assert password_from(flag="f", file=None, env=env, dotenv_path=dotenv) == "f"
    assert password_from(flag=None, file=None, env=env, dotenv_path=dotenv) == "from-env"
    for no_env in ({}, {"MONGO_PASSWORD": ""}):
        assert password_from(flag=None, file=None, env=no_env, dotenv_path=dotenv) == dotenv_pw
    assert password_from(flag=None, file=None, env={}, dotenv_path=tmp_path / "none") is None


@pytest.mark.parametrize("content", [b"", b"\n", b"\nsecond line\n", b"\xff\xfe-not-utf8", None])
def test_password_file_empty_or_unreadable_is_a_config_error(
    cli: CliRunner, tmp_path: Path, content: bytes | None
) -> None:
    file = tmp_path / "pw"
    if content is not None:
        file.write_bytes(content)
    with pytest.raises(ConfigError, match="password file") as error:
        password_from(flag="f", file=str(file), env={"MONGO_PASSWORD": "e"})
    assert error.value.exit_code == 2 and str(file) in str(error.value)
    with pytest.raises(ConfigError):
        password_from(flag=None, file=str(tmp_path), env={})  # a directory
    argv = ["--uri", "mongodb://127.0.0.1:1/", "-u", "x", "--password-file", str(file)]
    result = cli("backup", *argv, "--db", "d", "--out-dir", tmp_path / "out")
    assert result.code == 2 and "password file" in assert_single_error_line(result)
    assert not (tmp_path / "out").exists()
