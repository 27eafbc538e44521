"""The event loop `ahead serve` runs its workers on: uvloop, taking in a few waiting connections per turn.

libuv (under uvloop) accepts one new connection per turn of the loop (libuv pull request 3696), and a busy
worker's turn runs every request that is ready: 32 searches at 5 ms each make a turn of 160 ms. When 64
visitors opened connections at once, the last of them waited 32 turns, up to 3 s, before the worker even read
their request, while the connections already open were answered within 200 ms. Accepting every waiting
connection at once (as Python's own loop does) cured that, and unbalanced the workers instead: the one that
happened to be idle took all 64 connections, kept them alive, and served the run alone at half the speed.

So the listening socket is read here instead of by libuv, `ACCEPT_BATCH` connections per turn, each handed to
uvloop as an accepted socket, which serves it exactly as one it accepted itself. A burst is in after a few
turns, and a worker with short turns (the idle one) still takes no more than its share (bench/README.md,
"uvloop's accept"). Only the plain cases uvicorn uses are taken over (the socket its supervisor bound, or one
worker's IP address and port; no TLS: TLS ends at the proxy, docs/deploy.md); anything else goes to uvloop's
own `create_server`.

Each worker also hands Python's GIL over more often (`GIL_SWITCH_SECONDS`): the vote at once, the searches and the
item pages made off the loop run in threads, and every database call releases the GIL; the loop, wanting it back,
waited up to Python's default 5 ms for a thread that held it. With votes arriving in the background the kept board
then made 7,200-7,800 req/s; with 1 ms, 9,200-9,800 (bench/README.md, the board while votes arrive).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import ipaddress
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvloop

log = logging.getLogger("ahead.serving")

ACCEPT_BATCH = 4  # per turn of the loop: 1 is libuv's; 128 unbalanced the workers (above)
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
        sock.listen(backlog)  # uvicorn binds the socket; listening is create_server's part, as in asyncio's
        sock.setblocking(False)
        self.sockets = [sock]
        self._start()

    def _start(self) -> None:
        if not self._serving and not self._closed and self._sock.fileno() != -1:  # (a pause may end after close)
            self._loop.add_reader(self._sock.fileno(), self._accept)
            self._serving = True

    def _stop(self) -> None:
        if self._serving:
            self._loop.remove_reader(self._sock.fileno())
            self._serving = False

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                connection, _address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # none left
            except ConnectionAbortedError:
                continue  # the client gave up before we took it
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                log.error("accepting a connection failed (%s): trying again in %.0f s", exc.strerror, _PAUSE_WHEN_OUT)
                self._stop()
                self._loop.call_later(_PAUSE_WHEN_OUT, self._start)
                return
            connection.setblocking(False)
            task = self._loop.create_task(self._serve(connection))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    async def _serve(self, connection: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._protocol_factory, connection)
        except OSError:
            connection.close()  # gone before it could be served: nothing was read from it

    def is_serving(self) -> bool:
        return self._serving

    def close(self) -> None:
        """Stop accepting (the connections already taken in are uvicorn's to finish)."""
        self._closed = True
        self._stop()
        if self._owns_socket:
            self._sock.close()

    async def wait_closed(self) -> None:
        return None


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
