"""A loopback TCP proxy that injects network faults, for tests and chaos runs.

``FaultProxy`` sits between a client (the backup tool, a ``MongoClient``) and a server
on this machine and forwards bytes both ways without looking at them, so it works for
any protocol. Tests turn faults on and off from ordinary synchronous code; the proxy
runs an asyncio event loop in its own background thread.

Contract:

* It connects only to the target given to the constructor, which must be a loopback
  address (127.0.0.0/8, ``::1`` or ``localhost``, taken as 127.0.0.1); anything else is a
  ``ValueError``. It listens only on a loopback address too.
* ``start()`` binds a free port and returns once the proxy accepts connections;
  ``stop()`` closes every connection, stops the loop and joins the thread (idempotent).
* Every fault method is thread-safe and is in force on existing and new connections by
  the time it returns. ``heal()`` clears them all.
* Memory is bounded: each direction of a connection holds at most one read of 64 KiB.
  While it cannot be forwarded (stall, slow), further bytes wait in the OS socket
  buffers, where TCP flow control pushes back on the sender.
* A connection whose upstream connect fails (or takes over 10 s) is closed cleanly.
* Half-closes are forwarded; the connection ends when both directions have ended, when
  either side resets, or when a fault closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

Direction = Literal["both", "to_client", "to_server"]
Way = Literal["to_client", "to_server"]  # the direction one pump forwards
T = TypeVar("T")

CHUNK = 64 * 1024  # the largest single read
CONNECT_TIMEOUT = 10.0  # upstream connect
CONTROL_TIMEOUT = 10.0  # a control call waiting for the loop thread
SLICE_SECONDS = 0.05  # when slowed, forward slices worth this long, pausing after each


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # another host name: nothing says it stays on this machine
        return False


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _close(sock: socket.socket, *, reset: bool) -> None:
    if sock.fileno() == -1:
        return
    if reset:  # SO_LINGER 0: close() sends RST at once, like a crashed middlebox
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Conn:
    """One proxied connection: its two sockets and the two pumps between them."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.pumps: list[asyncio.Task[None]] = []
        self.cut_left: int | None = None  # bytes still allowed before cut_after closes it
        self.closed = False  # no more forwarding: a fault or an error ended it
        self.graceful = False  # closed by cut_after: FIN, not RST

    def end(self) -> None:
        """Stop forwarding: cancel the pumps (except the caller). The sockets are closed
        only once the pumps are done, so no pending read or write outlives its socket."""
        self.closed = True
        current = asyncio.current_task()
        for pump in self.pumps:
            if pump is not current:
                pump.cancel()


class FaultProxy:
    """Forwards ``listen_host:<free port>`` to ``target_host:target_port``, with faults."""

    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1") -> None:
        if not _is_loopback(target_host):
            raise ValueError(f"FaultProxy forwards only to loopback addresses, not {target_host!r}")
        if not _is_loopback(listen_host):
            raise ValueError(f"FaultProxy listens only on loopback addresses, not {listen_host!r}")
        # "localhost" resolves to whatever /etc/hosts says; pin it to 127.0.0.1.
        self.target_host = "127.0.0.1" if target_host == "localhost" else target_host
        self.target_port = target_port
        self.host = "127.0.0.1" if listen_host == "localhost" else listen_host
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._stopped = False
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # the accept loop and one per connection
        # Fault state: touched only on the loop thread (control calls hop there), so the
        # pumps never see it half-changed.
        self._stall_until = 0.0
        self._refuse_until = 0.0
        self._rate: float | None = None  # bytes per second, per direction per connection
        self._cut: Direction | None = None
        self._cut_bytes = 0
        self._changed: asyncio.Event | None = None  # set (then replaced) on each change
        self._stats = dict.fromkeys(
            ("accepted", "refused", "upstream_failed", "dropped", "to_server", "to_client"), 0
        )

    # -- lifecycle (any thread) ------------------------------------------------------------

    def start(self) -> FaultProxy:
        if self._thread is not None:
            raise RuntimeError("FaultProxy already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy")
        self._thread.daemon = True  # a test that forgets stop() must not hang the interpreter
        self._thread.start()
        try:
            self._port = self._submit(self._open())
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FaultProxy not started")
        return self._port

    def uri(self, template: str = "mongodb://{host}:{port}/?directConnection=true") -> str:
        """``template`` with ``{host}`` and ``{port}`` replaced by the proxy's address."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return template.format(host=host, port=self.port)

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or self._stopped:
            return
        self._stopped = True
        try:
            self._submit(self._shutdown())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(CONTROL_TIMEOUT)
            if not thread.is_alive():
                loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def stats(self) -> dict[str, int]:
        """Counters: accepted, refused, upstream_failed, dropped (closed by drop_all or
        cut_after), to_server and to_client (bytes forwarded each way)."""

        async def copy() -> dict[str, int]:
            return dict(self._stats)

        return self._submit(copy()) if self._running() else dict(self._stats)

    # -- faults (any thread) ---------------------------------------------------------------

    def drop_all(self) -> None:
        """Reset every open connection, both sides, now (bytes in flight are lost)."""
        self._control(self._drop)

    def stall(self, seconds: float) -> None:
        """Forward nothing either way for ``seconds``. Connections are still accepted and
        read (one chunk each way); what was held back is delivered when the stall ends."""
        self._control(lambda: setattr(self, "_stall_until", self._now() + seconds))

    def slow(self, kib_per_second: float | None) -> None:
        """Throttle each direction of each connection to ``kib_per_second``; None: full speed."""
        if kib_per_second is not None and kib_per_second <= 0:
            raise ValueError("kib_per_second must be positive (or None)")
        rate = None if kib_per_second is None else kib_per_second * 1024
        self._control(lambda: setattr(self, "_rate", rate))

    def cut_after(self, n_bytes: int, direction: Direction = "both") -> None:
        """Close each connection cleanly once it has forwarded ``n_bytes`` more bytes
        counted in ``direction``; each new connection gets the same allowance."""
        if n_bytes < 0 or direction not in ("both", "to_client", "to_server"):
            raise ValueError("cut_after needs n_bytes >= 0 and a known direction")
        self._control(lambda: self._set_cut(direction, n_bytes))

    def refuse(self, seconds: float) -> None:
        """For ``seconds``, close each connection the proxy accepts at once. (A client's
        connect() returns once the kernel queues it, which may be before the proxy
        accepts it: only a connection that has carried bytes is surely not new.)"""
        self._control(lambda: setattr(self, "_refuse_until", self._now() + seconds))

    def heal(self) -> None:
        """Clear every fault; held-back bytes flow again at full speed."""

        def heal() -> None:
            self._stall_until = self._refuse_until = 0.0
            self._rate = None
            self._set_cut(None, 0)

        self._control(heal)

    # -- plumbing --------------------------------------------------------------------------

    def _running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopped

    def _submit(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop thread and wait (bounded) for its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CONTROL_TIMEOUT)

    def _control(self, change: Callable[[], object]) -> None:
        """Apply a fault change on the loop thread, then wake every pump waiting under
        the old state; return only when done, so the fault is in force for the caller."""
        if not self._running():
            raise RuntimeError("FaultProxy not running")

        async def apply() -> None:
            done = change()
            if asyncio.iscoroutine(done):
                await done
            assert self._changed is not None
            self._changed.set()
            self._changed = asyncio.Event()

        self._submit(apply())

    def _set_cut(self, direction: Direction | None, n_bytes: int) -> None:
        self._cut, self._cut_bytes = direction, n_bytes
        for conn in self._conns:
            conn.cut_left = None if direction is None else n_bytes

    async def _drop(self) -> None:
        conns = [conn for conn in self._conns if not conn.closed]
        for conn in conns:
            conn.end()
        # Close only once the pumps are done, so no pending read outlives its socket.
        await asyncio.gather(*(p for conn in conns for p in conn.pumps), return_exceptions=True)
        for conn in conns:
            _close(conn.client, reset=True)
            _close(conn.server, reset=True)
        self._stats["dropped"] += len(conns)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _wait_change(self, timeout: float) -> None:
        """Sleep up to ``timeout`` seconds, waking early if any fault changes."""
        assert self._changed is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def _wait_unstalled(self) -> None:
        while (left := self._stall_until - self._now()) > 0:
            await self._wait_change(left)

    def _spawn(self, coro: Coroutine[Any, Any, None], owns: socket.socket | None = None) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if owns is not None:  # a task cancelled (stop) before it ran would leave it open
            task.add_done_callback(lambda _: _close(owns, reset=True))

    # -- the loop thread -------------------------------------------------------------------

    async def _open(self) -> int:
        self._changed = asyncio.Event()
        listener = socket.socket(_family(self.host), socket.SOCK_STREAM)
        listener.setblocking(False)
        listener.bind((self.host, 0))
        listener.listen(64)
        self._listener = listener
        self._spawn(self._accept_loop(listener))
        return int(listener.getsockname()[1])

    async def _shutdown(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, _ = await loop.sock_accept(listener)
            except OSError:  # e.g. EMFILE: back off instead of spinning
                await asyncio.sleep(0.1)
                continue
            self._stats["accepted"] += 1
            if self._now() < self._refuse_until:
                self._stats["refused"] += 1
                client.close()
                continue
            self._spawn(self._serve(client), owns=client)

    async def _serve(self, client: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        server = socket.socket(_family(self.target_host), socket.SOCK_STREAM)
        server.setblocking(False)
        try:
            await asyncio.wait_for(
                loop.sock_connect(server, (self.target_host, self.target_port)), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError):
            self._stats["upstream_failed"] += 1
            _close(server, reset=False)
            _close(client, reset=False)  # a plain FIN: the client fails fast, not hangs
            return
        except BaseException:  # cancelled by stop()
            _close(server, reset=True)
            raise
        for sock in (client, server):
            # Forward small pieces (slow()) at once instead of letting Nagle batch them.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(client, server)
        if self._cut is not None:
            conn.cut_left = self._cut_bytes
        self._conns.add(conn)
        reset = True  # unless both directions end normally or a cut closes it
        try:
            conn.pumps = [
                asyncio.create_task(self._pump(conn, client, server, "to_server")),
                asyncio.create_task(self._pump(conn, server, client, "to_client")),
            ]
            results = await asyncio.gather(*conn.pumps, return_exceptions=True)
            failed = any(isinstance(result, BaseException) for result in results)
            reset = failed and not conn.graceful
        finally:
            self._conns.discard(conn)
            for pump in conn.pumps:  # on cancel (stop), gather cancelled them already
                pump.cancel()
            _close(client, reset=reset)
            _close(server, reset=reset)

    async def _pump(self, conn: _Conn, src: socket.socket, dst: socket.socket, way: Way) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await loop.sock_recv(src, CHUNK):
                await self._forward(conn, memoryview(data), dst, way)
                if conn.closed:
                    return
            await self._wait_unstalled()  # an EOF is news too: a stall holds it back
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            # A reset on either side: end the whole connection, resetting the other side.
            conn.end()
            raise

    async def _forward(self, conn: _Conn, data: memoryview, dst: socket.socket, way: Way) -> None:
        loop = asyncio.get_running_loop()
        while data and not conn.closed:
            await self._wait_unstalled()
            size = len(data)
            if self._rate is not None:
                size = min(size, max(1, int(self._rate * SLICE_SECONDS)))
            counted = self._cut in ("both", way) and conn.cut_left is not None
            if counted:
                assert conn.cut_left is not None
                size = min(size, conn.cut_left)
                # Spend the allowance before awaiting, so the other pump sees it at once.
                conn.cut_left -= size
            piece, data = data[:size], data[size:]
            if piece:
                await loop.sock_sendall(dst, piece)
                self._stats[way] += size
            if counted and conn.cut_left == 0:
                if not conn.closed:  # the allowance is spent: close cleanly (FIN) both ways
                    conn.graceful = True
                    conn.end()
                    self._stats["dropped"] += 1
                return
            if self._rate is not None and piece:
                await self._wait_change(size / self._rate)
