"""One thread and one selector (epoll) driving many paho MQTT clients.

paho's own ``loop_start()`` makes a thread and a socket pair per client and waits in
``select()``, which fails for file descriptors above 1023: past about 340 clients it silently
stops receiving CONNACKs. Here every client's socket sits in one ``selectors`` selector, and a
single thread calls ``loop_read``/``loop_write`` when its socket is ready, using paho's
``on_socket_open``/``on_socket_close``/``on_socket_register_write``/
``on_socket_unregister_write`` callbacks to know which sockets to watch. Queued bytes are written
at the end of each turn straight away; a socket is watched for writability only when the kernel
would not take everything at once. ``loop_misc``
(keep-alive pings) is the caller's business (see :mod:`firmware_sim.fleet`).

The TCP connect inside paho's ``reconnect()`` blocks, for up to the connect timeout if a broker
is unreachable, so connects can run on a small pool of worker threads. While a worker holds a
client, nothing else touches it and the worker's socket callbacks are ignored; when it is done,
the loop thread registers the new socket itself (:meth:`NetLoop.connect`). Handing a client
between threads costs a GIL switch (up to 5 ms) each time, so for a broker on the same machine
connecting on the loop thread itself (``connect_workers=0``) is several times faster.

Everything else happens on the loop thread. Other threads get in with :meth:`NetLoop.call`
(returns a :class:`concurrent.futures.Future`) or :meth:`NetLoop.call_soon`; a socket pair wakes
the selector up. Timers (:meth:`NetLoop.at`) use the given clock's milliseconds (with
``time_scale`` telling how fast that clock runs).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import selectors
import socket
import threading
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import paho.mqtt.client as mqtt

from firmware_sim.clock import Clock, SystemClock

T = TypeVar("T")
MAX_WAIT_S = 0.5
TIMERS_PER_TURN = 5_000


class LoopClient(mqtt.Client):
    """A paho client whose TCP connect does not ``bind()`` to port 0 first, and whose socket
    has Nagle's algorithm off.

    paho (2.x) always passes ``source_address=("", 0)`` to ``socket.create_connection``, which
    binds before connecting. Binding to port 0 makes the kernel search the whole ephemeral port
    range for a port free towards *any* destination, which with thousands of connections and
    sockets in TIME_WAIT costs milliseconds per connect (measured: 10,000 binds took 6-16 s of
    the loop thread). Connecting without a bind lets the kernel pick a port for the one
    destination, as every other client does. With a bind address set, paho's way is kept.
    """

    def _create_socket_connection(self) -> socket.socket:
        if self._bind_address or self._bind_port or self._get_proxy():
            sock = super()._create_socket_connection()
        else:
            sock = socket.create_connection((self._host, self._port), timeout=self._connect_timeout)
        # Nagle's algorithm off: a PUBACK and the publishes after it (a command's result, the
        # door's events) would otherwise wait up to 40 ms for the broker's delayed ACK.
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


class NetLoop:
    """The selector thread. Create, :meth:`start`, use, :meth:`stop`."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        connect_workers: int = 4,
        name: str = "locker-sim-net",
        time_scale: float = 1.0,
    ) -> None:
        self.clock = clock or SystemClock()
        self.time_scale = time_scale
        """How many clock milliseconds pass per real millisecond (a scaled clock's speed)."""
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._calls: deque[Callable[[], None]] = deque()
        self._timers: list[tuple[int, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._workers = (
            ThreadPoolExecutor(connect_workers, thread_name_prefix=f"{name}-connect")
            if connect_workers > 0
            else None
        )
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._running = False
        self._after_turn: list[Callable[[], None]] = []
        self._to_flush: set[mqtt.Client] = set()
        """Clients with bytes queued: written at the end of the turn, without waiting."""
        self._writing: set[Any] = set()
        """Sockets watched for writability (a write that could not finish at once)."""
        self.errors = 0
        self.last_error = ""
        self._hooks = (self._socket_open, self._socket_close, self._want_write, self._no_write)
        """The socket callbacks, as bound methods made once for every client."""

    # --- threads ----------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop thread (after the calls already queued) and the connect workers."""
        if not self._running:
            return
        self.call_soon(self._halt)
        self._thread.join(timeout)
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)

    def _halt(self) -> None:
        self._running = False

    def in_loop(self) -> bool:
        return threading.get_ident() == self._thread.ident

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop thread soon (thread-safe)."""
        self._calls.append(fn)
        # BlockingIOError: wake-up bytes are pending already; OSError: the loop is gone.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on the loop thread; return a future of its result (thread-safe)."""
        future: Future[T] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller, not swallowed
                future.set_exception(exc)

        self.call_soon(run)
        return future

    def at(self, at_ms: int, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop thread at clock time ``at_ms`` (loop thread only)."""
        heapq.heappush(self._timers, (at_ms, next(self._order), fn))

    def after_each_turn(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` after every turn of the loop (I/O, calls and timers done)."""
        self._after_turn.append(fn)

    def error(self, where: str, exc: BaseException) -> None:
        """Count an unexpected exception and keep its description (loop thread)."""
        self.errors += 1
        self.last_error = f"{where}: {exc!r}"
        if self.errors <= 5:
            traceback.print_exception(exc)

    # --- other files (a serial port) -------------------------------------------------------

    def watch(self, fileobj: Any, handler: Any, *, write: bool = False) -> None:
        """Call ``handler.loop_read()`` / ``handler.loop_write()`` when ``fileobj`` is ready
        (loop thread only). Raises :class:`KeyError` if it is watched already."""
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
        self.selector.register(fileobj, events, handler)

    def want_write(self, fileobj: Any, handler: Any, write: bool) -> None:
        """Watch ``fileobj`` for writability too, or no longer (loop thread only)."""
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.modify(fileobj, events, handler)

    def unwatch(self, fileobj: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(fileobj)

    # --- paho clients -----------------------------------------------------------------------

    def attach(self, client: mqtt.Client) -> None:
        """Have this loop watch ``client``'s socket (call once per client, before connecting)."""
        opened, closed, want_write, no_write = self._hooks
        client.on_socket_open = opened
        client.on_socket_close = closed
        client.on_socket_register_write = want_write
        client.on_socket_unregister_write = no_write

    def _socket_open(self, client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        pass  # registered by connect()'s completion on the loop thread

    def _socket_close(self, client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        if self.in_loop():
            self._writing.discard(sock)
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(sock)

    def _want_write(self, client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        # Most writes finish at once: try at the end of the turn, and watch the socket for
        # writability only if bytes are left (two epoll_ctl calls and a wake-up saved per
        # publish).
        if self.in_loop():
            self._to_flush.add(client)

    def _no_write(self, client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        if sock in self._writing and self.in_loop():
            self._writing.discard(sock)
            with contextlib.suppress(KeyError, ValueError):
                self.selector.modify(sock, selectors.EVENT_READ, client)

    def _flush(self) -> None:
        while self._to_flush:
            batch, self._to_flush = self._to_flush, set()
            for client in batch:
                try:
                    client.loop_write()
                except Exception as exc:
                    self.error("write", exc)
                sock = client.socket()
                if sock is not None and client.want_write() and sock not in self._writing:
                    with contextlib.suppress(KeyError, ValueError):
                        events = selectors.EVENT_READ | selectors.EVENT_WRITE
                        self.selector.modify(sock, events, client)
                        self._writing.add(sock)

    def connect(self, client: mqtt.Client, done: Callable[[BaseException | None], None]) -> None:
        """Open ``client``'s connection on a worker thread (``connect_async`` was called).

        ``done(None)`` runs on the loop thread once the CONNECT packet is queued and the socket
        is watched (the CONNACK arrives later through ``on_connect``); ``done(exc)`` if the TCP
        connection failed. Call from the loop thread, with no socket open on ``client``.
        """
        stale = client.socket()
        if stale is not None:
            self._socket_close(client, None, stale)
        if self._workers is None:
            try:
                client.reconnect()
            except Exception as exc:  # refused, unreachable, DNS, TLS: reported to done()
                done(exc)
                return
            self._connected(client, done)
            return

        def work() -> None:
            failure: BaseException | None = None
            try:
                client.reconnect()
            except Exception as exc:  # refused, unreachable, DNS, TLS: reported to done()
                failure = exc
            if failure is not None:
                self.call_soon(lambda: done(failure))
                return
            self.call_soon(lambda: self._connected(client, done))

        self._workers.submit(work)

    def _connected(self, client: mqtt.Client, done: Callable[[BaseException | None], None]) -> None:
        sock = client.socket()
        if sock is None:
            done(ConnectionError("the connection closed while it was being opened"))
            return
        try:
            self.selector.register(sock, selectors.EVENT_READ, client)
        except (KeyError, ValueError) as exc:
            done(exc)
            return
        if client.want_write():
            self._to_flush.add(client)
        done(None)

    # --- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        while self._running:
            try:
                self._turn()
            except Exception as exc:  # a bug must not stop every locker: count it, go on
                self.error("loop", exc)
        self._close()

    def _turn(self) -> None:
        now = self.clock.now_ms()
        timers = self._timers
        ran = 0
        while timers and timers[0][0] <= now and ran < TIMERS_PER_TURN:
            _, _, fn = heapq.heappop(timers)
            ran += 1
            try:
                fn()
            except Exception as exc:
                self.error("timer", exc)
        wait = MAX_WAIT_S
        if ran == TIMERS_PER_TURN or self._calls or self._to_flush:
            wait = 0.0
        elif timers:
            ahead = (timers[0][0] - self.clock.now_ms()) / 1000 / self.time_scale
            wait = min(wait, max(0.0, ahead))
        for key, mask in self.selector.select(wait):
            client = key.data
            if client is None:
                self._drain_calls()
                continue
            try:
                if mask & selectors.EVENT_READ:
                    client.loop_read()
                if mask & selectors.EVENT_WRITE:
                    client.loop_write()
            except Exception as exc:
                self.error("socket", exc)
        if self._calls:
            self._drain_calls()
        for fn in self._after_turn:
            try:
                fn()
            except Exception as exc:
                self.error("after turn", exc)
        self._flush()

    def _drain_calls(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        calls = self._calls
        for _ in range(len(calls)):
            fn = calls.popleft()
            try:
                fn()
            except Exception as exc:
                self.error("call", exc)

    def _close(self) -> None:
        for key in list(self.selector.get_map().values()):
            if isinstance(key.data, mqtt.Client):  # other files belong to whoever watched them
                with contextlib.suppress(OSError):
                    key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()
