"""The fault-injection proxy (tests/faultproxy.py): each fault against a tiny echo server,
then the faults that matter to the backup tool through the suite's real MongoDB server.

Every wait is bounded (socket timeouts, queue timeouts); a sleep only lets a fault's own
duration pass.
"""

from __future__ import annotations

import ipaddress
import queue
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError
from pymongo.uri_parser import parse_uri

from faultproxy import FaultProxy
from serverfeatures import lacks

WAIT = 10.0  # the bound on any single wait: generous, the machine is shared


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        # What each connection received, put when it ends: tests wait on it, not sleep.
        self.received: queue.Queue[bytes] = queue.Queue()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _EchoHandler(socketserver.BaseRequestHandler):
    server: _EchoServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(30)
        got = bytearray()
        try:
            while data := sock.recv(65536):
                got += data
                sock.sendall(data)
        except OSError:
            pass  # a reset from the proxy is part of several tests
        finally:
            self.server.received.put(bytes(got))


@pytest.fixture
def echo() -> Iterator[_EchoServer]:
    server = _EchoServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)


@pytest.fixture
def proxy(echo: _EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", echo.port) as running:
        yield running


def connect(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT)


def recv_exact(sock: socket.socket, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        data = sock.recv(size - len(got))
        if not data:
            raise EOFError(f"EOF after {len(got)} of {size} bytes")
        got += data
    return bytes(got)


def recv_to_end(sock: socket.socket) -> tuple[bytes, bool]:
    """Everything until the connection ends, and whether it ended with a reset."""
    got = bytearray()
    try:
        while data := sock.recv(65536):
            got += data
    except ConnectionResetError:
        return bytes(got), True
    return bytes(got), False


def echo_through(sock: socket.socket, payload: bytes) -> None:
    # Send from a thread: sending much before reading any could fill every buffer on the
    # way (client, proxy, echo server) and deadlock.
    sender = threading.Thread(target=sock.sendall, args=(payload,))
    sender.start()
    try:
        assert recv_exact(sock, len(payload)) == payload
    finally:
        sender.join(WAIT)


def round_trip(proxy: FaultProxy, payload: bytes = b"ping") -> None:
    with connect(proxy) as sock:
        echo_through(sock, payload)


# -- the proxy itself, against the echo server --------------------------------------------


def test_forwards_bytes_both_ways_and_counts(proxy: FaultProxy, echo: _EchoServer) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB: many 64 KiB reads, with back-pressure
    with connect(proxy) as sock:
        echo_through(sock, payload)
        sock.shutdown(socket.SHUT_WR)  # the half-close reaches the server, its EOF comes back
        assert recv_to_end(sock) == (b"", False)
    assert echo.received.get(timeout=WAIT) == payload
    stats = proxy.stats
    assert stats["accepted"] == 1
    assert stats["to_server"] == stats["to_client"] == len(payload)
    assert stats["dropped"] == stats["refused"] == stats["upstream_failed"] == 0


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.20", "0.0.0.0", "::", "example.com"])
def test_refuses_targets_off_this_machine(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(host, 27017)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "localhost", "::1"])
def test_accepts_loopback_targets(host: str) -> None:
    proxy = FaultProxy(host, 27017)
    assert host == "localhost" or ipaddress.ip_address(proxy.target_host).is_loopback
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(host, 27017, listen_host="0.0.0.0")


def test_drop_all_resets_open_connections(proxy: FaultProxy, echo: _EchoServer) -> None:
    with connect(proxy) as first, connect(proxy) as second:
        for sock in (first, second):
            sock.sendall(b"hello")
            assert recv_exact(sock, 5) == b"hello"
        proxy.drop_all()
        for sock in (first, second):
            assert recv_to_end(sock) == (b"", True)
    # Both upstream sides were reset too: each echo handler ended.
    assert [echo.received.get(timeout=WAIT) for _ in range(2)] == [b"hello"] * 2
    assert proxy.stats["dropped"] == 2
    round_trip(proxy)  # new connections are not affected


def test_stall_holds_bytes_then_delivers_them(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        before = time.monotonic()
        proxy.stall(1.5)
        sock.sendall(b"held")
        with connect(proxy) as late:  # still accepted during the stall...
            late.sendall(b"late")
            sock.settimeout(0.5)
            with pytest.raises(TimeoutError):  # ...but nothing moves either way
                sock.recv(10)
            sock.settimeout(WAIT)
            assert recv_exact(sock, 4) == b"held"
            assert time.monotonic() - before >= 1.5
            assert recv_exact(late, 4) == b"late"


def test_heal_ends_a_stall_at_once(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        proxy.stall(60)
        sock.sendall(b"held")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(10)
        started = time.monotonic()
        proxy.heal()
        sock.settimeout(WAIT)
        assert recv_exact(sock, 4) == b"held"
        assert time.monotonic() - started < 5


def test_slow_throttles_and_none_restores_full_speed(proxy: FaultProxy) -> None:
    payload = b"s" * (32 * 1024)
    with connect(proxy) as sock:
        proxy.slow(64)  # 32 KiB at 64 KiB/s: half a second each way (the two overlap)
        started = time.monotonic()
        sock.sendall(payload)
        assert recv_exact(sock, len(payload)) == payload
        assert time.monotonic() - started >= 0.4
        proxy.slow(None)
        started = time.monotonic()
        echo_through(sock, payload * 32)
        assert time.monotonic() - started < 5  # 1 MiB: at 64 KiB/s it would take 16 s
    with pytest.raises(ValueError):
        proxy.slow(0)


def test_cut_after_to_client_closes_cleanly(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 12
    with connect(proxy) as existing:
        existing.sendall(b"before")
        assert recv_exact(existing, 6) == b"before"
        proxy.cut_after(1000, direction="to_client")  # applies to existing connections...
        existing.sendall(payload)
        assert recv_to_end(existing) == (payload[:1000], False)  # a FIN, not a reset
    with connect(proxy) as new:  # ...and gives each new one the same allowance
        new.sendall(payload)
        assert recv_to_end(new) == (payload[:1000], False)
    assert proxy.stats["dropped"] == 2
    proxy.heal()
    round_trip(proxy, payload)


def test_cut_after_to_server(proxy: FaultProxy, echo: _EchoServer) -> None:
    proxy.cut_after(10, direction="to_server")
    with connect(proxy) as sock:
        sock.sendall(b"0123456789abcdef")
        got, _ = recv_to_end(sock)
        assert b"0123456789".startswith(got)  # whatever echo made it back before the cut
    assert echo.received.get(timeout=WAIT) == b"0123456789"


def test_cut_after_both_counts_both_directions(proxy: FaultProxy) -> None:
    proxy.cut_after(100)
    with connect(proxy) as sock:
        sock.sendall(b"x" * 60)
        got, _ = recv_to_end(sock)
    stats = proxy.stats
    assert stats["to_server"] + stats["to_client"] == 100
    assert len(got) == stats["to_client"] >= 40


def test_refuse_closes_new_connections_only(proxy: FaultProxy) -> None:
    with connect(proxy) as existing:
        # A round trip first: connect() returns once the kernel has queued the connection,
        # which the proxy may accept only after refuse() (and would then refuse it).
        existing.sendall(b"first")
        assert recv_exact(existing, 5) == b"first"
        before = time.monotonic()
        proxy.refuse(1.0)
        with connect(proxy) as refused:  # the connect itself succeeds: accept, then close
            assert recv_to_end(refused)[0] == b""
        existing.sendall(b"still")
        assert recv_exact(existing, 5) == b"still"
        assert proxy.stats["refused"] == 1
        time.sleep(max(0.0, 1.0 - (time.monotonic() - before)) + 0.05)  # the window passes
        round_trip(proxy)
    proxy.refuse(60)
    proxy.heal()  # heal ends a refusal too
    round_trip(proxy)


def test_upstream_connect_failure_closes_the_client() -> None:
    with socket.socket() as unused:  # bound, never listening: connects to it are refused
        unused.bind(("127.0.0.1", 0))
        with FaultProxy("127.0.0.1", unused.getsockname()[1]) as proxy, connect(proxy) as sock:
            assert recv_to_end(sock)[0] == b""
            assert proxy.stats["upstream_failed"] == 1


def test_stop_closes_everything_and_is_idempotent(echo: _EchoServer) -> None:
    proxy = FaultProxy("127.0.0.1", echo.port).start()
    port = proxy.port
    with connect(proxy) as sock:
        round_trip(proxy)
        proxy.stall(60)  # a pump waiting in a stall must not hold stop() up
        sock.sendall(b"x")
        proxy.stop()
        assert recv_to_end(sock)[0] == b""
    proxy.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
    with pytest.raises(RuntimeError):
        proxy.drop_all()
    assert proxy._thread is not None and not proxy._thread.is_alive()


def test_faults_from_many_threads_keep_bytes_intact(proxy: FaultProxy) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def flip(number: int) -> None:
        try:
            while not stop.is_set():
                proxy.slow(256 + number)
                proxy.stall(0.01)
                proxy.heal()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    flippers = [threading.Thread(target=flip, args=(n,)) for n in range(4)]
    for flipper in flippers:
        flipper.start()
    try:
        payload = bytes(range(256)) * 256
        for _ in range(3):
            round_trip(proxy, payload)
    finally:
        stop.set()
        for flipper in flippers:
            flipper.join(WAIT)
    assert not errors
    assert proxy.stats["to_client"] == 3 * len(payload)


# -- through the suite's MongoDB server ---------------------------------------------------


@pytest.fixture
def mongo_proxy(mongo_uri: str) -> Iterator[tuple[FaultProxy, dict[str, Any]]]:
    parsed = parse_uri(mongo_uri)
    host, port = parsed["nodelist"][0]
    options = parsed["options"]
    if options.get("tls") or not (host == "localhost" or ipaddress.ip_address(host).is_loopback):
        lacks("own-servers", "the proxy forwards only plain TCP to a loopback server")
    # Credentials of MONGO_TEST_URI, if any, carried over to the proxied clients.
    auth = {"username": parsed["username"], "password": parsed["password"]}
    if "authsource" in options:
        auth["authSource"] = options["authsource"]
    with FaultProxy(host, port) as proxy:
        yield proxy, {key: value for key, value in auth.items() if value is not None}


def proxied_client(
    proxy: FaultProxy, auth: dict[str, Any], **options: Any
) -> MongoClient[dict[str, Any]]:
    # retryReads=False: with the default, a find rides out a 5 s stall (its retry opens a
    # new connection that waits the stall out). serverMonitoringMode="poll": a streaming
    # monitor notices drop_all first and clears the pool, so whether the next operation
    # fails would be a race.
    settings: dict[str, Any] = {
        "serverSelectionTimeoutMS": 3000,
        "socketTimeoutMS": 2000,
        "retryReads": False,
        "serverMonitoringMode": "poll",
        **auth,
        **options,
    }
    return MongoClient(f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true", **settings)


def test_mongo_stall_times_out_then_heals(
    mongo_proxy: tuple[FaultProxy, dict[str, Any]], client: MongoClient[Any], db_name: str
) -> None:
    proxy, auth = mongo_proxy
    client[db_name].c.insert_one({"_id": 1})
    with proxied_client(proxy, auth) as proxied:
        collection = proxied[db_name].c
        assert proxied.admin.command("ping")["ok"] == 1
        proxy.stall(5)
        started = time.monotonic()
        with pytest.raises(NetworkTimeout) as raised:
            collection.find_one()
        assert isinstance(raised.value, AutoReconnect)
        assert time.monotonic() - started < 4.5  # the 2 s socket timeout, not the 5 s stall
        proxy.heal()
        assert collection.find_one() == {"_id": 1}


def test_mongo_drop_all_fails_the_next_operation_once(
    mongo_proxy: tuple[FaultProxy, dict[str, Any]],
) -> None:
    proxy, auth = mongo_proxy
    with proxied_client(proxy, auth) as proxied:
        # A connection used under 1 s ago is not checked for a reset before reuse.
        assert proxied.admin.command("ping")["ok"] == 1
        proxy.drop_all()
        with pytest.raises(AutoReconnect):
            proxied.admin.command("ping")
        assert proxied.admin.command("ping")["ok"] == 1  # the retry reconnects
    assert proxy.stats["dropped"] >= 2  # the pooled connection and the monitor's


def test_mongo_refuse_fails_server_selection(
    mongo_proxy: tuple[FaultProxy, dict[str, Any]],
) -> None:
    proxy, auth = mongo_proxy
    with proxied_client(proxy, auth) as connected:
        assert connected.admin.command("ping")["ok"] == 1
        before = time.monotonic()
        proxy.refuse(2)
        # Under 2 s, so the selection gives up inside the window (with the brief's 3 s,
        # its monitor's retries would get in once the window closed).
        with proxied_client(proxy, auth, serverSelectionTimeoutMS=1000) as fresh:
            with pytest.raises(ServerSelectionTimeoutError):
                fresh.admin.command("ping")
            assert connected.admin.command("ping")["ok"] == 1  # pooled: not affected
            assert proxy.stats["refused"] >= 1
            time.sleep(max(0.0, 2.0 - (time.monotonic() - before)) + 0.05)  # window passes
            fresh_after = proxied_client(proxy, auth)
            with fresh_after:
                assert fresh_after.admin.command("ping")["ok"] == 1
