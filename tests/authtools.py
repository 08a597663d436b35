"""Helpers for the authentication and TLS tests: servers with users, a small PKI, and a
scanner that looks for secrets in every byte the tool wrote.

SecantusDB has no localhost exception (``createUser`` on a fresh ``--auth`` server is refused
as unauthenticated): users are created on a server started without ``--auth``, which is
then restarted on the same store with ``--auth`` (and TLS), as ``secantusd-py --help`` says.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import ipaddress
import tarfile
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pymongo import MongoClient

from conftest import CliRunner
from mongo_backup.mongo.embedded import EmbeddedServer
from restoretools import assert_same_bytes


def provisioned_server(
    store: Path, setup: Callable[[MongoClient[Any]], None], extra_args: list[str]
) -> EmbeddedServer:
    """A server on ``store`` after ``setup`` ran on it without auth or TLS; the caller stops it."""
    first = EmbeddedServer(storage_path=str(store))
    first.start()
    try:
        with MongoClient(first.uri, serverSelectionTimeoutMS=10_000) as client:
            setup(client)
    finally:
        first.stop()
    return EmbeddedServer(storage_path=str(store), extra_args=extra_args).start()


# --- users and logins ------------------------------------------------------------------

SRC, DST = "src", "dst"
COLLECTIONS = ("items", "notes")


@dataclass(frozen=True)
class User:
    name: str
    password: str
    source: str = "admin"  # the database that holds the user


ADMIN = User("root-admin", "Adm1n-Pw")
READER = User("bk-reader-7Qz", "Pw-9f3Kq!zX@ample")  # read on src only
RESTORER = User("bk-restorer-4Wm", "R3s:t/o?r#e[1]@%x", DST)  # readWrite+dbAdmin on dst
LEGACY = User("bk-legacy-2Lp", "Leg@cy-Pw-88a")  # SCRAM-SHA-1 only; read src, write dst
SPACED = User("bk-spaced-3Rt", "Head-K7q tail-M2w")  # read src; a space in the password
WRITER_ROLES = [{"role": "readWrite", "db": DST}, {"role": "dbAdmin", "db": DST}]


def load_data(client: MongoClient[Any]) -> None:
    client[SRC].items.insert_many([{"_id": i, "n": i, "s": f"é{i}", "f": i / 3} for i in range(50)])
    client[SRC].notes.insert_many([{"_id": f"k{i}", "tags": ["a", i]} for i in range(5)])
    client[SRC].notes.create_index("tags", name="tags_idx")


def setup_users(client: MongoClient[Any]) -> None:
    def make(user: User, roles: list[dict[str, str]], **extra: Any) -> None:
        client[user.source].command(
            "createUser", user.name, pwd=user.password, roles=roles, **extra
        )

    reader = [{"role": "read", "db": SRC}]
    make(ADMIN, [{"role": "root", "db": "admin"}])
    make(READER, reader)
    make(RESTORER, WRITER_ROLES)
    make(LEGACY, reader + WRITER_ROLES, mechanisms=["SCRAM-SHA-1"])
    make(SPACED, reader)
    load_data(client)


class AuthServer:
    """A server with ``--auth`` and the users above; ``admin`` is a client as ADMIN."""

    def __init__(self, server: EmbeddedServer) -> None:
        self.server = server
        self.uri = f"mongodb://127.0.0.1:{server.port}/?directConnection=true"
        self.admin: MongoClient[Any] = MongoClient(self.uri_for(ADMIN))

    @classmethod
    @contextmanager
    def running(cls, store: Path) -> Iterator[AuthServer]:
        server = provisioned_server(store, setup_users, ["--auth"])
        try:
            wrapper = cls(server)
            with wrapper.admin:
                yield wrapper
        finally:
            server.stop()

    def uri_for(self, user: User) -> str:
        """The URI with ``user``'s credentials in it, percent-encoded."""
        name, secret = (urllib.parse.quote(part, safe="") for part in (user.name, user.password))
        return (
            f"mongodb://{name}:{secret}@127.0.0.1:{self.server.port}/"
            f"?directConnection=true&authSource={user.source}"
        )


def password_file(folder: Path, user: User) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"{user.name}.pw"
    path.write_text(f"{user.password}\nsecond line is ignored\n", encoding="utf-8")
    return path


@dataclass
class Login:
    options: list[str]
    env_password: str | None = None  # MONGO_PASSWORD in the environment
    cwd: Path | None = None  # a folder with a .env

    def use(self, mp: pytest.MonkeyPatch) -> list[str]:
        mp.delenv("MONGO_PASSWORD", raising=False)
        if self.env_password is not None:
            mp.setenv("MONGO_PASSWORD", self.env_password)
        if self.cwd is not None:
            mp.chdir(self.cwd)
        return self.options


def login(srv: AuthServer, user: User, how: str, tmp: Path) -> Login:
    """How to log in as ``user`` the way ``how`` says (uri, env, dotenv, auth-source,
    sha256, sha1, else --password-file)."""
    source = [] if user.source == "admin" else ["--auth-source", user.source]
    if how == "uri":
        return Login(["--uri", srv.uri_for(user)])
    if how == "env":
        return Login(["--uri", srv.uri, "--username", user.name, *source], user.password)
    if how == "dotenv":
        folder = tmp / user.name
        folder.mkdir()
        (folder / ".env").write_text(f"MONGO_PASSWORD='{user.password}'\n", encoding="utf-8")
        return Login(["--uri", srv.uri, "-u", user.name, *source], cwd=folder)
    flags = ["-u", user.name, "--password-file", str(password_file(tmp / "secret", user))]
    if how == "auth-source":  # the URI's path would make its database the auth source
        path_uri = srv.uri.replace("/?", f"/{SRC if user.source == 'admin' else 'admin'}?")
        return Login(["--uri", path_uri, *flags, "--auth-source", user.source])
    mechanism = {
        "sha256": ["--auth-mechanism", "SCRAM-SHA-256"],
        "sha1": ["--auth-mechanism", "SCRAM-SHA-1"],
    }.get(how, [])
    return Login(["--uri", srv.uri, *flags, *source, *mechanism])


def nothing_in(folder: Path) -> bool:
    return not folder.exists() or not any(folder.rglob("*"))


def round_trip(
    cli: CliRunner,
    client: MongoClient[Any],
    out: Path,
    backup: Callable[[], list[str]],
    restore: Callable[[], list[str]],
) -> None:
    """Back up SRC, restore it into DST (each quiet and silent), compare byte for byte."""
    made = cli("backup", *backup(), "--db", SRC, "--out-dir", out, "-q")
    assert made.code == 0 and made.err == "", made.err
    restored = cli("restore", made.out.strip(), *restore(), "--db", DST, "--drop", "-q")
    assert restored.code == 0 and restored.err == "", restored.err
    for name in COLLECTIONS:
        assert assert_same_bytes(client, SRC, DST, name) > 0


# --- certificates ----------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path  # trusted CA (PEM)
    other_ca: Path  # a CA that signed nothing the servers use
    server_cert: Path  # for localhost and 127.0.0.1
    server_key: Path
    wrong_host_cert: Path  # issued by ``ca`` for db.invalid.example only
    wrong_host_key: Path
    client: Path  # client certificate and key in one PEM, issued by ``ca``
    client_dn: str  # its subject as the server names it (RFC 4514, most specific first)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mongo-backup tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    hosts: tuple[str, ...] = (),
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    issuer_name, issuer_key = issuer or (subject, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    cas = []
    for label in ("ca", "other_ca"):
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(f"mongo-backup test {label}")
        files[label] = _pem(_certificate(name, key, None))
        cas.append((name, key))
    server_usage = ExtendedKeyUsageOID.SERVER_AUTH
    for label, hosts in (
        ("server", ("localhost", "127.0.0.1")),
        ("wrong_host", ("db.invalid.example",)),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(_name(hosts[0]), key, cas[0], hosts=hosts, usage=server_usage)
        files[f"{label}_cert"], files[f"{label}_key"] = _pem(cert), _key_pem(key)
    key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate(
        _name("backup-client"), key, cas[0], usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    files["client"] = _pem(client) + _key_pem(key)
    paths = {label: folder / f"{label}.pem" for label in files}
    for label, data in files.items():
        paths[label].write_bytes(data)
    return Pki(**paths, client_dn="CN=backup-client,O=mongo-backup tests")


def tls_args(cert: Path, key: Path, client_ca: Path | None = None) -> list[str]:
    """secantusd-py options for TLS; with ``client_ca`` it asks clients for a certificate."""
    args = ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    return args + (["--tls-ca-file", str(client_ca)] if client_ca else [])


@dataclass
class TlsServers:
    pki: Pki
    good: EmbeddedServer  # certificate for localhost and 127.0.0.1, issued by pki.ca
    wrong_host: EmbeddedServer  # certificate for db.invalid.example, issued by pki.ca
    admin: MongoClient[Any]

    def uri(self, server: EmbeddedServer, query: str = "") -> str:
        return f"mongodb://127.0.0.1:{server.port}/?directConnection=true{query}"

    @classmethod
    @contextmanager
    def running(cls, pki: Pki) -> Iterator[TlsServers]:
        started: list[EmbeddedServer] = []
        try:
            for cert, key in (
                (pki.server_cert, pki.server_key),
                (pki.wrong_host_cert, pki.wrong_host_key),
            ):
                started.append(EmbeddedServer(extra_args=tls_args(cert, key)).start())
            uri = f"mongodb://127.0.0.1:{started[0].port}/?directConnection=true"
            with MongoClient(uri, tls=True, tlsCAFile=str(pki.ca)) as admin:
                load_data(admin)
                yield cls(pki, *started, admin=admin)
        finally:
            for server in started:
                server.stop()


@contextmanager
def x509_server(pki: Pki, store: Path) -> Iterator[str]:
    """A TLS server with --auth that asks for client certificates and knows the client
    certificate's subject as a user; yields its URI (host localhost)."""
    options = ["--auth", *tls_args(pki.server_cert, pki.server_key, pki.ca)]
    server = provisioned_server(store, x509_setup(pki), options)
    try:
        yield f"mongodb://localhost:{server.port}/?directConnection=true"
    finally:
        server.stop()


def x509_setup(pki: Pki) -> Callable[[MongoClient[Any]], None]:
    """Creates the client certificate's subject as a user on $external, loads the data."""

    def setup(client: MongoClient[Any]) -> None:
        roles = [{"role": "read", "db": SRC}, *WRITER_ROLES]
        client["$external"].command(
            "createUser", pki.client_dn, roles=roles, mechanisms=["MONGODB-X509"]
        )
        load_data(client)

    return setup


# --- looking for secrets ---------------------------------------------------------------


def unpacked(label: str, data: bytes) -> dict[str, bytes]:
    """{label: bytes} of ``data`` and, recursively, what it holds once decompressed or
    untarred (labels ``label!member``, ``label!unpacked``)."""
    return dict(_contents(label, data))


def _contents(label: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """``data`` itself and, recursively, what it holds once decompressed or untarred."""
    yield label, data
    inner: bytes | None = None
    if data.startswith(b"\x28\xb5\x2f\xfd"):
        reader = zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(data), read_across_frames=True
        )
        inner = reader.read()
    elif data.startswith(b"\x1f\x8b"):
        inner = gzip.decompress(data)
    elif data[257:262] == b"ustar":
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                handle = tar.extractfile(member)
                if handle is not None:
                    yield from _contents(f"{label}!{member.name}", handle.read())
    if inner is not None:
        yield from _contents(f"{label}!unpacked", inner)


def written_contents(*roots: Path) -> dict[str, bytes]:
    """{label: bytes} of every file under ``roots`` (recursively), unpacked too."""
    found: dict[str, bytes] = {}
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            found.update(_contents(str(path), path.read_bytes()))
    return found


def leaks(needles: list[str], contents: dict[str, bytes]) -> list[str]:
    """``"needle in label"`` for every needle found anywhere in ``contents``."""
    return [
        f"{needle!r} in {label}"
        for label, data in contents.items()
        for needle in needles
        if needle.encode() in data
    ]
