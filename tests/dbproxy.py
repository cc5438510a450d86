"""A TCP proxy on the loopback between the controller and its database, that can cut the line.

Tests route the controller's database URL through it (:meth:`DatabaseProxy.url_for`) to make
the database go away for real, the way a client sees it: :meth:`DatabaseProxy.cut` closes every
proxied connection (a query in flight fails, the server rolls its transaction back) and closes
the port, so new connections are refused; :meth:`DatabaseProxy.restore` opens the port again.
:meth:`DatabaseProxy.stall` is the quieter failure of a network partition or a hung server:
connections stay open and new ones are accepted, but not a byte goes through either way, nor a
hang-up, until :meth:`DatabaseProxy.flow` (what was held back is then delivered).

It listens on a port below the kernel's ephemeral range: while the line is cut, no outgoing
connection of another process can take the port, so it can always be opened again.

:meth:`DatabaseProxy.upstream_ports` names the proxied connections as the server sees them
(``pg_stat_activity.client_port``), so a test can also terminate exactly the controller's
sessions (``pg_terminate_backend``), as a PostgreSQL restart does, without touching anyone else's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

LOOPBACK = "127.0.0.1"
CHUNK = 65536


def _ports_outside_ephemeral_range() -> range:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(max(low - 12000, 1024), low)


class DatabaseProxy:
    """Forwards ``127.0.0.1:port`` to ``upstream`` (a loopback address only)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        if upstream_host not in (LOOPBACK, "localhost"):
            raise ValueError(f"the proxy forwards to the loopback only, not {upstream_host!r}")
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: dict[asyncio.Task[None], list[asyncio.StreamWriter]] = {}
        self._flowing = asyncio.Event()
        self._flowing.set()

    @classmethod
    def for_url(cls, database_url: str) -> DatabaseProxy:
        parts = urlsplit(database_url)
        return cls(parts.hostname or LOOPBACK, parts.port or 5432)

    def url_for(self, database_url: str) -> str:
        """``database_url`` pointed at the proxy (user, database and query kept)."""
        parts = urlsplit(database_url)
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@{LOOPBACK}:{self.port}" if user else f"{LOOPBACK}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def start(self) -> None:
        """Listen on a free port below the ephemeral range."""
        candidates = list(_ports_outside_ephemeral_range())
        random.shuffle(candidates)
        for port in candidates[:200]:
            try:
                self._server = await asyncio.start_server(self._accept, LOOPBACK, port)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            self.port = port
            return
        raise RuntimeError("no free port below the ephemeral range")

    async def cut(self) -> None:
        """Close every proxied connection and the port: the database is gone (a silent line
        too: what it held back is dropped)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        for writers in self._links.values():
            for writer in writers:
                writer.close()  # both pipes of the link see the end, and the link ends
        self._flowing.set()  # (held bytes go to closed connections: nowhere)
        if self._links:
            await asyncio.wait(list(self._links))

    async def restore(self) -> None:
        """Accept connections again, on the same port."""
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, LOOPBACK, self.port)

    def stall(self) -> None:
        """Hold every byte, both ways, on open and new connections: the database goes silent."""
        self._flowing.clear()

    def flow(self) -> None:
        """Let bytes through again, what was held back first."""
        self._flowing.set()

    async def close(self) -> None:
        await self.cut()

    def upstream_ports(self) -> set[int]:
        """The local ports of the live connections to the server (its ``client_port``s)."""
        ports: set[int] = set()
        for writers in self._links.values():
            if len(writers) == 2:
                ports.add(int(writers[1].get_extra_info("sockname")[1]))
        return ports

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        writers = [writer]
        self._links[task] = writers
        try:
            await self._flowing.wait()  # a silent server does not even greet a new client
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                return
            writers.append(up_writer)
            pipes = [
                asyncio.create_task(self._pipe(reader, up_writer)),
                asyncio.create_task(self._pipe(up_reader, writer)),
            ]
            try:
                # Either side closing ends the link, as does a cut (closing both).
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._links.pop(task, None)
            for w in writers:
                w.close()

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(CHUNK):
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        # A side that hangs up while the line is silent is not heard either, until it flows.
        await self._flowing.wait()
