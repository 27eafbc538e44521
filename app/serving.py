"""The event loop `ahead serve` runs its workers on: uvloop, taking in a few waiting connections per turn.

libuv (under uvloop) accepts one new connection per turn of the loop (libuv pull request 3696), and a busy
worker's turn runs every request that is ready: 32 searches at 5 ms each make a turn of 160 ms. When 64
visitors opened connections at once, the last of them waited 32 turns, up to 3 s, before the worker even read
their request, while the connections already open were answered within 200 ms. Accepting every waiting
connection at once (as Python's own loop does) cured that, and unbalanced the workers instead: the one that
happened to be idle took all 64 connections, kept them alive, and served the run alone at half the speed.

So the listening socket is read here instead of by libuv, `ACCEPT_BATCH` connections per turn, each handed to
uvloop as an accepted socket, which serves it exactly as one it accepted itself. A burst is in after a few
turns (bench/README.md, "uvloop's accept").

Workers sharing the socket also keep each other's counts of connections held (`Peers`: a few bytes of shared
memory), and one holding more than the fewest held elsewhere waits before taking more, the longer the further ahead
(`ACCEPT_WAIT_PER_CONNECTION`, at most `ACCEPT_WAIT_MAX`), so that the one holding fewer takes them. Without it the
split of a burst followed whichever worker's turns were shortest at that moment: 64 connections opened at once went
12 / 52, and kept alive, the worker with 52 answered each request 52 / 32 times later than an even split would have,
for as long as they stayed open (the never-repeated search's p99 191 ms at 12 / 52 against 120-134 ms at 32 / 32
and 28 / 36, bench/README.md). A worker that is not ahead takes a connection at once, as before: waiting on its own
count alone (tried first) held up every request of a client opening a connection per request.

Only the plain cases uvicorn uses are taken over (the socket its supervisor bound, or one worker's IP address and
port; no TLS: TLS ends at the proxy, docs/deploy.md); anything else goes to uvloop's own `create_server`.

Each worker also hands Python's GIL over more often (`GIL_SWITCH_SECONDS`): the vote at once, the searches and the
item pages made off the loop run in threads, and every database call releases the GIL; the loop, wanting it back,
waited up to Python's default 5 ms for a thread that held it. With votes arriving in the background the kept board
then made 7,200-7,800 req/s; with 1 ms, 9,200-9,800 (bench/README.md, the board while votes arrive).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import ipaddress
import logging
import mmap
import multiprocessing
import os
import resource
import signal
import socket
import stat
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import uvloop

log = logging.getLogger("ahead.serving")

ACCEPT_BATCH = 4  # per turn of the loop: 1 is libuv's; 128 unbalanced the workers (above)
# Workers sharing the socket: one holding more connections than the fewest held elsewhere (by more than
# ACCEPT_SLACK) waits this long per connection it is ahead before taking more, at most ACCEPT_WAIT_MAX
ACCEPT_SLACK = 2
ACCEPT_WAIT_PER_CONNECTION = 0.0005  # seconds
ACCEPT_WAIT_MAX = 0.02  # seconds
LONG_LIVED = 1.0  # seconds: connections living this long on average are balanced (a start assumes so)
LIFETIME_WEIGHT = 0.1  # of each closed connection in the average
PUBLISH_EVERY = 1.0  # seconds: a worker's count is published at least this often (as well as on each change)
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_PAUSE_WHEN_OUT = 1.0  # seconds without accepting when the process is out of file descriptors (as asyncio)


class Listener:
    """What `create_server` returns, for the parts uvicorn uses: `sockets`, `close()`, `wait_closed()`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 protocol_factory: Callable[[], asyncio.BaseProtocol], backlog: int, *, owns_socket: bool = False
                 ) -> None:
        self._loop, self._sock, self._protocol_factory = loop, sock, protocol_factory
        self._owns_socket = owns_socket  # made for it (one worker); else uvicorn's, which closes it
        self._serving = self._closed = False
        self._connecting: set[asyncio.Task[Any]] = set()
        self._holding = 0  # connections taken in and not yet closed, as counted here
        # uvicorn's own set of this server's open connections, once a protocol shows it: it follows a connection
        # that changes protocol (a WebSocket upgrade), which the count here cannot (its close is the new one's)
        self._connections: set[Any] | None = None
        # How long this worker's connections have lived lately (a moving average, seconds): long-lived ones are
        # balanced across the workers, those of a client opening one per request are not (`_accept`). A new worker
        # assumes long-lived ones, firmly enough that a health check's connection or two changes nothing.
        self.lifetime = 10 * LONG_LIVED
        # Other workers take connections from the same socket: their counts, where they can be shared
        self.peers = None if owns_socket else Peers.join(sock)
        if self.peers is not None:
            loop.call_later(PUBLISH_EVERY, self._publish_now_and_then)
        sock.listen(backlog)  # uvicorn binds the socket; listening is create_server's part, as in asyncio's
        sock.setblocking(False)
        self.sockets = [sock]
        self._start()

    def _start(self) -> None:
        if not self._serving and not self._closed and self._sock.fileno() != -1:  # (a pause may end after close)
            self._loop.add_reader(self._sock.fileno(), self._accept)
            self._serving = True

    def _publish(self) -> None:
        """This worker's count, for the others to read."""
        if self.peers is not None:
            self.peers.publish(self.holding)

    def _publish_now_and_then(self) -> None:
        """The count published every `PUBLISH_EVERY` seconds as well: a connection taken over by another protocol (a
        WebSocket upgrade) ends without a word to this one, and the others would read the count from before."""
        if not self._closed and self.peers is not None:
            self._publish()
            self._loop.call_later(PUBLISH_EVERY, self._publish_now_and_then)

    def _stop(self) -> None:
        if self._serving:
            self._loop.remove_reader(self._sock.fileno())
            self._serving = False

    @property
    def holding(self) -> int:
        """Connections taken in and not yet closed: uvicorn's count where known (a connection taken over by another
        protocol included), else this one's."""
        return len(self._connections) if self._connections is not None else self._holding

    def _held(self, change: int) -> None:
        self._holding += change
        self._publish()

    def _accept(self) -> None:
        """The socket has connections waiting: take a few now, or, holding more than another worker sharing the
        socket, after a wait that grows with how far ahead (the other takes them meanwhile). Only while this
        worker's connections are long-lived: those of a client opening one per request spread over the workers as
        they come and go, and waiting would only hold each request up (a throughput lost to it: 12,000 -> 7,000
        req/s, bench/README.md). Holding no more than the slack, no worker can be further ahead: the others' counts
        are not read."""
        holding = self.holding
        fewest = (self.peers.fewest_elsewhere()
                  if self.peers is not None and holding > ACCEPT_SLACK and self.lifetime >= LONG_LIVED else None)
        ahead = holding - fewest if fewest is not None else 0
        if ahead <= ACCEPT_SLACK:
            self._take()
            return
        self._stop()
        self._loop.call_later(min(ACCEPT_WAIT_MAX, ahead * ACCEPT_WAIT_PER_CONNECTION), self._after_wait)

    def _after_wait(self) -> None:
        if self._closed:
            return
        paused = False
        try:
            paused = not self._take()  # whatever is still waiting
        finally:  # then listen again, whatever happened (not when out of descriptors: paused, started later)
            if not paused:
                self._start()

    def _take(self) -> bool:
        """Up to `ACCEPT_BATCH` waiting connections; False when out of file descriptors (accepting is paused)."""
        for _ in range(ACCEPT_BATCH):
            try:
                connection, _address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return True  # none left
            except ConnectionAbortedError:
                continue  # the client gave up before we took it
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                log.error("accepting a connection failed (%s): trying again in %.0f s", exc.strerror, _PAUSE_WHEN_OUT)
                self._stop()
                self._loop.call_later(_PAUSE_WHEN_OUT, self._start)
                return False
            connection.setblocking(False)
            self._held(1)
            task = self._loop.create_task(self._serve(connection))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)
        return True

    async def _serve(self, connection: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._counted, connection)
        except OSError:
            self._held(-1)
            connection.close()  # gone before it could be served: nothing was read from it
            return
        self._publish()  # now in the server's own count

    def _counted(self) -> asyncio.BaseProtocol:
        """The server's protocol for a connection, which says when the connection ends (`holding`, `lifetime`) and
        is closed when its client is too slow to send a request (`Deadlines`)."""
        protocol = self._protocol_factory()
        made, received, lost = protocol.connection_made, getattr(protocol, "data_received", None), protocol.connection_lost
        pause, resume = protocol.pause_writing, protocol.resume_writing
        opened = time.monotonic()
        if self._connections is None and isinstance(connections := getattr(protocol, "connections", None), set):
            self._connections = connections
        deadlines = Deadlines(self._loop, protocol)

        def connection_made(transport: asyncio.BaseTransport) -> None:
            made(transport)
            deadlines.opened(cast(asyncio.Transport, transport))  # a stream's, as uvicorn's protocols take it

        def data_received(data: bytes) -> None:
            if not deadlines.refused(data):
                received(data)  # type: ignore[misc]  # (only set when the protocol has one)
                deadlines.received(len(data))

        def pause_writing() -> None:  # the client has not read what was sent: the transport holds the rest
            pause()
            deadlines.paused()

        def resume_writing() -> None:
            resume()
            deadlines.resumed()

        def connection_lost(exc: Exception | None) -> None:
            deadlines.ended()
            lost(exc)  # (uvicorn's set forgets the connection here)
            self._held(-1)
            self.lifetime += (time.monotonic() - opened - self.lifetime) * LIFETIME_WEIGHT

        # Attributes of this one protocol object, which its transport calls: ours, then uvicorn's
        protocol.connection_made = connection_made  # type: ignore[method-assign]  # noted here, then uvicorn's
        if received is not None:
            protocol.data_received = data_received  # type: ignore[attr-defined]  # noted here, then uvicorn's
        protocol.pause_writing = pause_writing  # type: ignore[method-assign]  # noted here, then uvicorn's
        protocol.resume_writing = resume_writing  # type: ignore[method-assign]  # noted here, then uvicorn's
        protocol.connection_lost = connection_lost  # type: ignore[method-assign]  # noted here, then uvicorn's
        return protocol

    def is_serving(self) -> bool:
        return self._serving

    def close(self) -> None:
        """Stop accepting (the connections already taken in are uvicorn's to finish)."""
        self._closed = True
        self._stop()
        if self.peers is not None:
            self.peers.leave()
            self.peers = None
        if self._owns_socket:
            self._sock.close()

    async def wait_closed(self) -> None:
        return None


# How long a client may take to send what it owes. Without limits a connection that sends nothing, or half a request
# and then nothing, stayed open for good: about a thousand of them (a worker's usual file descriptor limit) and the
# worker took no connection from anyone again (a walk-through, issue 13). The proxy in front has its own
# (docs/deploy.md); these are for a portal that is reached directly.
HEAD_SECONDS = 20.0  # a request's line and headers, from their first byte (nginx: 60, Apache: 20 extended to 40)
BODY_SECONDS = 20.0  # a request's body, from the end of its headers, ...
BODY_BYTES_A_SECOND = 500  # ... and a second more for every this many bytes received (as Apache's mod_reqtimeout)
# How many bytes a request's line and headers may take. uvicorn's httptools protocol set no limit (its h11 one: 16 KiB):
# one connection sent 1.9 GB of a single header in 8 s and the worker grew by as much (a walk-through, issue 13).
# nginx allows 8 KiB a line and about 33 KiB in all by default; browsers' cookies alone stay well under this.
HEAD_BYTES = 64 * 1024
# How long a client may leave an answer unread once the server's buffer for it is full (between two drains: nginx's
# `send_timeout`, 60 s too). A client that never read held its answer, and the connection, for good.
SEND_SECONDS = 60.0
_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
              b"content-length: 36\r\nconnection: close\r\n\r\nThe request's headers are too large.")


class Deadlines:
    """The times a connection's client is given, kept for one connection of uvicorn's HTTP protocols (httptools and
    h11: both keep the request being answered as `cycle`, with `more_body` and `response_complete`).

    * A connection opened and silent is closed after the server's keep-alive time, as uvicorn closes one left idle
      after an answer (a proxy that keeps connections open for its next requests is left to close them itself: see
      `KEEP_ALIVE_SECONDS`); uvicorn itself never closed one that had not sent a byte yet.
    * Once a request's first byte is in, its whole head must be within `HEAD_SECONDS`, however it trickles in.
    * Its body must start within `BODY_SECONDS` of the head and then keep arriving: a second more per
      `BODY_BYTES_A_SECOND` bytes. Closing the connection tells the app the client is gone (`http.disconnect`): a
      request cut short this way has changed nothing.
    * A request's head may take `HEAD_BYTES`: more, and it is answered 431 and the connection closed, before the
      protocol reads it (`refused`). Counted as an allowance of bytes the client may send before the next head is
      complete: `HEAD_BYTES`, plus the body's `Content-Length` once a head is in (a body of no stated length, chunked,
      is not counted while it is read, and the connection is closed if the app answered before reading it all: what
      follows it could be any size).

    * An answer must be read: once the transport holds more of it than its buffer's mark (the client reads nothing,
      `pause_writing`), the client has `SEND_SECONDS` until it drains (`resume_writing`), else the connection is
      aborted (closing would wait for the unread bytes to go).

    The time the app itself takes to answer is never counted here. A connection taken over by another protocol (a
    WebSocket) is left to it. Per request this costs one look at the protocol's state after its data; a timer only
    while something is owed."""

    __slots__ = ("_allowance", "_bytes", "_cycle", "_loop", "_owed", "_protocol", "_sending", "_since", "_timer",
                 "_transport")

    _NOTHING, _OPENED, _HEAD, _BODY = range(4)

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.BaseProtocol) -> None:
        self._loop, self._protocol = loop, protocol
        self._transport: asyncio.Transport | None = None
        self._owed = self._NOTHING
        self._since = 0.0  # when the body began to be owed
        self._bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._cycle: Any = None  # the request whose head came in last (the protocol's `cycle`)
        self._allowance: int | None = HEAD_BYTES  # bytes the client may still send before a head is in; None: any
        self._sending: asyncio.TimerHandle | None = None  # while the client leaves an answer unread (`paused`)

    def _state(self) -> int:
        """What the client owes now, by the protocol's state: a request's head, its body, or nothing."""
        cycle = getattr(self._protocol, "cycle", None)
        if cycle is None or cycle.response_complete:
            return self._HEAD
        return self._BODY if cycle.more_body else self._NOTHING

    def opened(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        if self._state() == self._HEAD:
            self._owed = self._OPENED
            self._arm(float(getattr(self._protocol, "timeout_keep_alive", HEAD_SECONDS)))

    def refused(self, data: bytes) -> bool:
        """Before the protocol reads `data`: whether it holds more of a request's head than `HEAD_BYTES` allows, when
        no request is under way (then it is answered 431 and the connection closed, and the app never sees it). The
        head is taken to end at the first blank line in `data`, or to fill all of it: never less than it holds."""
        if self._allowance is None:
            return False
        cycle = getattr(self._protocol, "cycle", None)
        if cycle is not None and not cycle.response_complete:
            return False  # its body, or the next request sent early: counted in `received`
        end = data.find(b"\r\n\r\n")
        if (len(data) if end < 0 else end + 4) <= self._allowance:
            return False
        self._too_large(cycle)
        return True

    def received(self, count: int) -> None:
        cycle = getattr(self._protocol, "cycle", None)
        if cycle is not self._cycle and cycle is not None:  # a request's head is in: its body, then the next head
            self._cycle = cycle
            if not cycle.more_body:  # its body is in too (most requests: none): the next head's from here
                self._allowance = HEAD_BYTES
            else:
                length = _content_length(cycle)
                self._allowance = None if length is None else HEAD_BYTES + length
        elif self._allowance is not None:
            self._allowance -= count
        if cycle is not None and (not cycle.more_body or cycle.response_complete) and self._allowance is None:
            if cycle.more_body:  # answered before its body of no stated length was read: no telling where it ends
                self._close()
                return
            self._allowance = HEAD_BYTES  # the body is in: the next head's from here
        if self._allowance is not None and self._allowance < 0:
            self._too_large(cycle)
            return
        state = self._state()
        if state == self._NOTHING:
            if self._owed != self._NOTHING:
                self._owed = self._NOTHING
                self._disarm()
        elif state == self._HEAD:
            if self._owed != self._HEAD:  # a new request's head began (a trickle never extends it)
                # (or the rest of a body the app answered without reading: counted as the next head's first bytes)
                self._owed = self._HEAD
                self._arm(HEAD_SECONDS)
        elif self._owed == self._BODY:
            self._bytes += count
        else:
            self._owed, self._since, self._bytes = self._BODY, self._loop.time(), 0
            self._arm(BODY_SECONDS)

    def paused(self) -> None:
        if self._sending is None:
            self._sending = self._loop.call_later(SEND_SECONDS, self._unread, self._unsent())

    def resumed(self) -> None:
        if self._sending is not None:
            self._sending.cancel()
            self._sending = None

    def _unsent(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    def _unread(self, unsent: int) -> None:
        """`SEND_SECONDS` after the transport's buffer filled (or after the last look): aborted if the client took
        nothing of it since. A transport being closed (uvicorn closes one idle for its keep-alive time, its answer
        still going out) says nothing more when it drains: what it holds is looked at instead."""
        self._sending = None
        if self._transport is None:
            return
        now = self._unsent()
        if 0 < now < unsent:  # the client is reading: another SEND_SECONDS from here
            self._sending = self._loop.call_later(SEND_SECONDS, self._unread, now)
        elif now:
            self._transport.abort()  # (closing would wait for the unread bytes to go)

    def ended(self) -> None:
        self._owed = self._NOTHING
        self._disarm()
        self.resumed()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self._loop.call_later(seconds, self._due)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _due(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing() or transport.get_protocol() is not self._protocol:
            return  # closed, or taken over by another protocol
        state, owed = self._state(), self._owed
        if owed == self._BODY and state == self._BODY:
            left = self._since + BODY_SECONDS + self._bytes / BODY_BYTES_A_SECOND - self._loop.time()
            if left > 0:
                self._arm(left)
                return
        elif state != self._HEAD or owed not in (self._OPENED, self._HEAD):
            self._owed = self._NOTHING  # (a body the app answered without waiting for: idle, uvicorn's to time)
            return
        self._close()

    def _close(self) -> None:
        self._owed = self._NOTHING
        self._disarm()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def _too_large(self, cycle: Any) -> None:
        """More than `HEAD_BYTES` of a head: 431 when no answer is under way (else the connection is only closed)."""
        transport = self._transport
        if (cycle is None or cycle.response_complete) and transport is not None and not transport.is_closing():
            transport.write(_TOO_LARGE)
        self._close()


def _content_length(cycle: Any) -> int | None:
    """The body's length a request's head gave (0 for none), or None when it is sent chunked."""
    length = 0
    for name, value in cycle.scope["headers"]:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:  # (the parsers refuse such a head before: not counted, to be safe)
                return None
    return length


class Peers:
    """The counts of connections held by the workers sharing one listening socket: a small file mapped into each
    (in /dev/shm where there is one), named after the socket (its inode, the same in every worker: they inherit it
    from the supervisor). A slot per worker: its process id and its count, which only it writes; a slot whose process
    has ended is taken by the next worker to join, and its count is never read. Nothing here is needed to serve: if
    the file cannot be made, workers take connections as they come."""

    SLOTS = 64
    _SLOT = struct.Struct("qq")  # process id, connections held

    def __init__(self, path: str, fd: int, mapped: mmap.mmap, slot: int) -> None:
        self.path, self._fd, self._map, self._slot = path, fd, mapped, slot
        self._offset, self._pid = slot * self._SLOT.size, os.getpid()

    @classmethod
    def join(cls, sock: socket.socket) -> Peers | None:
        folder = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()  # nosec B108 # our own file, 0600
        path = folder
        try:
            path = os.path.join(folder, f"ahead-accept-{os.getuid()}-{os.fstat(sock.fileno()).st_ino}")
            # Never through a link someone else put there, never a file that is not this user's own
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            return cls._without(path, exc)
        try:
            found = os.fstat(fd)
            if found.st_uid != os.getuid() or not stat.S_ISREG(found.st_mode):
                raise ValueError("not this user's own file")
            size = cls.SLOTS * cls._SLOT.size
            with _locked(fd):
                # The space taken for real before the file is mapped: a mapping past what a full /dev/shm can hold
                # kills the process at its first touch (SIGBUS), which no exception handler sees
                os.posix_fallocate(fd, 0, size)
                mapped = mmap.mmap(fd, size)
                for slot in range(cls.SLOTS):
                    pid, _ = cls._read(mapped, slot)
                    if pid == 0 or not _alive(pid):
                        cls._SLOT.pack_into(mapped, slot * cls._SLOT.size, os.getpid(), 0)
                        return cls(path, fd, mapped, slot)
                mapped.close()
                raise ValueError(f"all {cls.SLOTS} slots taken")
        except (OSError, ValueError) as exc:
            with contextlib.suppress(OSError):
                found = os.fstat(fd)
                if found.st_uid == os.getuid() and found.st_size == 0:  # made here and never set up: not left behind
                    os.unlink(path)
            os.close(fd)
            return cls._without(path, exc)

    @staticmethod
    def _without(path: str, exc: Exception) -> None:
        log.warning("workers cannot share their connection counts (%s: %s): each takes connections as they come",
                    path, exc)
        return None

    @classmethod
    def _read(cls, mapped: mmap.mmap, slot: int) -> tuple[int, int]:
        """A slot's (process id, connections held)."""
        pid, holding = cls._SLOT.unpack_from(mapped, slot * cls._SLOT.size)
        return pid, holding

    def publish(self, holding: int) -> None:
        self._SLOT.pack_into(self._map, self._offset, self._pid, holding)

    def fewest_elsewhere(self) -> int | None:
        """The fewest connections another live worker on the socket holds; None when there is none."""
        fewest: int | None = None
        for slot in range(self.SLOTS):
            if slot == self._slot:
                continue
            pid, holding = self._read(self._map, slot)
            if pid and (fewest is None or holding < fewest) and _alive(pid):
                fewest = holding
        return fewest

    def leave(self) -> None:
        """Free the slot; the last worker to leave removes the file."""
        try:
            with _locked(self._fd):
                self._SLOT.pack_into(self._map, self._offset, 0, 0)
                others = (self._read(self._map, slot)[0] for slot in range(self.SLOTS))
                mapped, named = os.fstat(self._fd), os.stat(self.path, follow_symlinks=False)
                # the last one here removes the file, not one made since under the same name (this one removed)
                if (not any(pid and _alive(pid) for pid in others)
                        and (mapped.st_dev, mapped.st_ino) == (named.st_dev, named.st_ino)):
                    os.unlink(self.path)
        except OSError:
            pass
        finally:
            self._map.close()
            os.close(self._fd)


@contextlib.contextmanager
def _locked(fd: int) -> Iterator[None]:
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    """Whether `pid` is a worker on the socket still: this process, or one running under the same supervisor (where
    /proc tells; elsewhere, any process with that id). A slot's process id taken by an unrelated process after its
    worker ended must not count, its count frozen at whatever the worker held then."""
    if pid == os.getpid():
        return True
    if not _PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            fields = stat_file.read().rsplit(b")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != b"Z" and int(fields[1]) == os.getppid()


_PROC = os.path.isdir("/proc/self")


class Loop(uvloop.Loop):
    async def create_server(self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: Any = None,
                            port: Any = None, *, sock: socket.socket | None = None, ssl: Any = None,
                            backlog: int = 100, **options: Any) -> Any:
        """uvicorn's two plain cases: the socket its supervisor bound for several workers, or (one worker) an
        address to listen on, given as an IP address. Anything else is uvloop's own."""
        owned = sock is None and _ip_address(host) and isinstance(port, int) and ssl is None and not options
        if owned:
            sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                        backlog=backlog)
        if sock is None or ssl is not None or options or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return await super().create_server(protocol_factory, host, port, sock=sock, ssl=ssl, backlog=backlog,
                                               **options)
        return Listener(self, sock, protocol_factory, backlog, owns_socket=bool(owned))


def _ip_address(host: Any) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# How long a thread may hold the GIL while another (the event loop) waits for it (Python's default: 5 ms)
GIL_SWITCH_SECONDS = 0.001


def new_event_loop() -> Loop:
    """For uvicorn's `loop` setting, which calls it in each worker ("app.serving:new_event_loop"); sets the
    worker's GIL switch interval (see the module's docstring), and has a supervised worker stop with its supervisor
    (`stop_with_supervisor`)."""
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    stop_with_supervisor()
    return Loop()


def raise_file_limit() -> tuple[int, int]:
    """Raise this process's limit of open files (inherited by the workers it starts) to the most the system allows
    it, as Go's runtime and nginx's `worker_rlimit_nofile` do: each connection holds one, and a soft limit of 1,024 (a
    common default) let a thousand idle connections shut every other client out (`Deadlines` bounds how long they
    last; this, how many it takes). Returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, MAX_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (OSError, ValueError) as exc:
            log.warning("the limit of open files stays at %d (%s)", soft, exc)
            return soft, soft
        return soft, wanted
    return soft, soft


MAX_OPEN_FILES = 1 << 20  # where the hard limit is none


PR_SET_PDEATHSIG = 1  # Linux's prctl(2): the signal the kernel sends this process when its parent ends


def stop_with_supervisor() -> None:
    """In a worker that uvicorn's supervisor started (`ahead serve` with more than one worker: a process spawned by
    multiprocessing), have the kernel send it SIGTERM when the supervisor ends, however it ends. A supervisor killed
    outright (SIGKILL, the out-of-memory killer) left its workers serving, with nobody to replace one that hangs,
    and holding the port, so that the instance could not be started again until someone found them (a
    walk-through). SIGTERM is the graceful stop: what is in hand is answered first. Linux only; nothing elsewhere,
    nor in a process of its own (one worker: the server itself)."""
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("a worker could not ask to stop with its supervisor: %s", os.strerror(ctypes.get_errno()))
        return
    if os.getppid() != parent.pid:  # the supervisor ended before the request was made: nobody will send it
        os.kill(os.getpid(), signal.SIGTERM)
