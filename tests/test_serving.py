"""`ahead serve`'s event loop (app/serving.py): uvloop, with the waiting connections taken in a few per turn.

Each test runs a real uvicorn on that loop in a thread, on a socket the test made, with clients that connected
before the server started: a burst waiting in the kernel's queue, as when many visitors arrive at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from app import serving
from app.cli import SERVING_LOOP
from tests.helpers.servers import free_port


class CountingSocket(socket.socket):
    """A listening socket that notes each connection it hands out, and can fail its first accepts."""

    def __init__(self, failures: list[OSError] | None = None) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.accepted = 0
        self.failures = list(failures or [])
        self.failed_at: float | None = None
        self.first_taken_at: float | None = None

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures:
            self.failed_at = time.monotonic()
            raise self.failures.pop(0)
        connection = super().accept()
        self.accepted += 1
        self.first_taken_at = self.first_taken_at or time.monotonic()
        return connection


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"hello"})


@contextmanager
def served(sock: socket.socket, app: Any = hello, **options: Any) -> Iterator[uvicorn.Server]:
    server = uvicorn.Server(uvicorn.Config(app, loop=SERVING_LOOP, lifespan="off", log_level="warning", **options))
    thread = threading.Thread(target=lambda: server.run(sockets=[sock]), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "the server did not stop"
        sock.close()


def listening(sock: CountingSocket) -> int:
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port: int = sock.getsockname()[1]
    return port


def ask(port: int, count: int) -> list[socket.socket]:
    """`count` connections, each with its request sent: they wait in the kernel until the server takes them."""
    clients = []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        client.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        clients.append(client)
    return clients


def one_answer(client: socket.socket) -> bytes:
    """One answer of `hello` on a connection left open: its head and body may come in separate reads."""
    received = b""
    while not received.endswith(b"hello"):
        chunk = client.recv(4096)
        assert chunk, f"the connection closed after {received!r}"
        received += chunk
    return received


def answer(client: socket.socket) -> bytes:
    chunks = []
    while chunk := client.recv(4096):
        chunks.append(chunk)
    client.close()
    return b"".join(chunks)


def test_serve_runs_on_this_loop():
    assert uvicorn.Config(hello, loop=SERVING_LOOP).get_loop_factory() is serving.new_event_loop


def test_a_worker_hands_the_gil_to_its_loop_within_a_millisecond(monkeypatch):
    """A thread (a vote, a search) holds the GIL at most `GIL_SWITCH_SECONDS` while the loop waits for it."""
    monkeypatch.setattr(sys, "setswitchinterval", lambda seconds: set_to.append(seconds))
    set_to: list[float] = []
    serving.new_event_loop().close()
    assert set_to == [serving.GIL_SWITCH_SECONDS] and serving.GIL_SWITCH_SECONDS <= 0.001


def test_a_burst_is_taken_in_a_few_at_a_time_and_every_connection_is_answered(monkeypatch):
    sock = CountingSocket()
    port = listening(sock)
    clients = ask(port, 12)
    taken: list[int] = []
    take = serving.Listener._take

    def counted(self: serving.Listener) -> bool:
        before = sock.accepted
        result = take(self)
        taken.append(sock.accepted - before)
        return result

    monkeypatch.setattr(serving.Listener, "_take", counted)
    with served(sock):
        answers = [answer(client) for client in clients]
    assert all(a.startswith(b"HTTP/1.1 200") and a.endswith(b"hello") for a in answers)
    assert sum(taken) == 12
    # libuv takes one a turn (twelve turns for twelve); all at once unbalanced the workers
    assert max(taken) == serving.ACCEPT_BATCH == 4


def kept_open(port: int, count: int) -> list[socket.socket]:
    """`count` keep-alive connections, each answered once and left open (a proxy's or a browser's)."""
    clients = []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        client.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        assert one_answer(client).endswith(b"hello")
        clients.append(client)
    return clients


def listener(server: uvicorn.Server) -> serving.Listener:
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    [taking] = server.servers
    assert isinstance(taking, serving.Listener)
    return taking


def until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_of_two_workers_sharing_the_socket_the_one_holding_fewer_connections_takes_a_burst():
    """Kept alive, connections stay with the worker that took them: a burst split 12 / 52 (whichever worker's
    turns were shortest then) had the one with 52 answer each request later for as long as they stayed open."""
    sock = CountingSocket()
    port = listening(sock)
    with served(sock) as busy:
        held = kept_open(port, 40)
        until(lambda: listener(busy).holding == 40, "the first worker holds its 40 connections")
        with served(second_worker(sock)) as idle:
            listener(idle)
            burst = kept_open(port, 12)
            until(lambda: listener(busy).holding + listener(idle).holding == 52, "every connection is held")
            assert listener(idle).holding >= 10, (listener(busy).holding, listener(idle).holding)
            for client in [*held, *burst]:
                client.close()
            # closed connections are counted out: a worker's wait does not grow with connections long gone
            until(lambda: listener(busy).holding == listener(idle).holding == 0, "the closed connections counted out")


def second_worker(sock: socket.socket) -> socket.socket:
    """A second worker's socket: its own descriptor of the same listening socket, as uvicorn's spawned workers have."""
    return socket.socket(sock.family, sock.type, fileno=os.dup(sock.fileno()))


def test_a_worker_whose_connections_are_short_lived_takes_each_new_one_at_once(monkeypatch):
    """A client opening a connection per request (a proxy without keep-alive) is never held up by the balancing:
    with short-lived connections a worker ahead of the others takes a new one at once all the same. Waiting for
    them too (tried first) took a server answering 64 such clients from 12,000 to 7,000 req/s."""
    waits: list[float] = []
    after_wait = serving.Listener._after_wait
    monkeypatch.setattr(serving.Listener, "_after_wait", lambda self: (waits.append(1), after_wait(self))[1])
    sock = CountingSocket()
    port = listening(sock)
    with served(sock) as first:
        for _ in range(30):  # one request per connection: the worker's connections live milliseconds
            assert answer(ask(port, 1)[0]).endswith(b"hello")
        assert listener(first).lifetime < serving.LONG_LIVED
        held = kept_open(port, 10)  # and it holds ten open now, far ahead of a second worker holding none
        with served(second_worker(sock)) as second:
            listener(second)
            for _ in range(30):
                assert answer(ask(port, 1)[0]).endswith(b"hello")
            assert waits == []
        for client in held:
            client.close()


def test_connections_taken_over_by_another_protocol_are_counted_out_when_they_end():
    """A WebSocket upgrade hands the connection to another protocol object, whose end the first never hears of:
    counted by that first one, anyone could push a worker's count up for good with upgrade requests (a walk-through:
    1,720 after a second of them), and a worker started later then took every new connection."""
    sock = CountingSocket()
    port = listening(sock)
    upgrade = (b"GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with served(sock) as server:
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(upgrade)
                assert client.recv(4096).startswith(b"HTTP/1.1 ")
        until(lambda: listener(server).holding == 0, "the upgraded connections counted out")
        # and what the other workers read says so once the worker next takes or ends a connection of its own
        assert answer(ask(port, 1)[0]).endswith(b"hello")
        peers = listener(server).peers
        assert peers is not None
        until(lambda: published(peers) == (os.getpid(), 0), "published")


def ended_pid() -> int:
    """The process id of a process that has ended."""
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    return int(ended.stdout)


def published(peers: serving.Peers) -> tuple[int, int]:
    """What the other workers read of this one: (its process id, connections held)."""
    return serving.Peers._read(peers._map, peers._slot)


def second_slot(peers: serving.Peers, pid: int, holding: int) -> None:
    """Another worker's slot, as if it had written it."""
    serving.Peers._SLOT.pack_into(peers._map, serving.Peers._SLOT.size, pid, holding)


class TestPeers:
    """The workers' shared counts: a slot each, a dead worker's slot taken again, the file gone with the last."""

    def test_a_dead_workers_slot_is_ignored_and_taken_by_the_next(self):
        sock = CountingSocket()
        listening(sock)
        dead = ended_pid()
        first = serving.Peers.join(sock)
        assert first is not None
        try:
            # a worker that ended holding nothing would otherwise hold every other back
            second_slot(first, dead, 0)
            assert first.fewest_elsewhere() is None
            # nor does a live process that took a dead worker's id: it is no worker of this supervisor
            with subprocess.Popen(["sleep", "30"]) as stranger:
                second_slot(first, stranger.pid, 0)
                assert first.fewest_elsewhere() is None
                stranger.kill()
            second = serving.Peers.join(sock)
            assert second is not None and second._slot == 1
            second.publish(3)
            assert first.fewest_elsewhere() == 3
            second.leave()
        finally:
            first.leave()
        assert not os.path.exists(first.path)  # the last to leave removes the file
        sock.close()

    def test_the_last_to_leave_removes_its_own_file_only(self):
        """A dead worker's slot does not keep the file; a file made since under the same name (the first removed by
        hand, or by logind's RemoveIPC) is another's and stays."""
        sock = CountingSocket()
        listening(sock)
        dead = ended_pid()
        first = serving.Peers.join(sock)
        assert first is not None
        second_slot(first, dead, 7)
        os.unlink(first.path)
        second = serving.Peers.join(sock)  # a worker started since: a new file under the same name
        assert second is not None and second._slot == 0
        first.leave()
        assert os.path.exists(second.path)
        second_slot(second, dead, 7)
        second.leave()  # the only live one: the dead one's slot does not keep the file
        assert not os.path.exists(second.path)
        sock.close()

    def test_a_worker_publishes_what_it_holds(self):
        sock = CountingSocket()
        port = listening(sock)
        with served(sock) as server:
            held = kept_open(port, 5)
            peers = listener(server).peers
            assert peers is not None
            until(lambda: published(peers) == (os.getpid(), 5), "published")
            for client in held:
                client.close()

    def test_without_room_in_dev_shm_the_workers_serve_unbalanced_and_say_so(self, monkeypatch, caplog):
        """A full /dev/shm: the file's space is taken before it is mapped, so the worker hears of it as an error
        (mapped without it, the first write killed the worker with SIGBUS, and its replacements after it)."""

        def full(fd: int, offset: int, length: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "posix_fallocate", full)
        sock = CountingSocket()
        port = listening(sock)
        name = f"ahead-accept-{os.getuid()}-{os.fstat(sock.fileno()).st_ino}"
        with served(sock) as server:
            assert answer(ask(port, 1)[0]).endswith(b"hello")
            assert listener(server).peers is None
        assert "cannot share their connection counts" in caplog.text and "No space left" in caplog.text
        assert not any(os.path.exists(os.path.join(folder, name)) for folder in ("/dev/shm", tempfile.gettempdir()))

    def test_a_file_of_someone_elses_is_not_used(self, tmp_path, monkeypatch):
        sock = CountingSocket()
        listening(sock)
        target = tmp_path / "mine.txt"
        target.write_text("precious")
        peers = serving.Peers.join(sock)
        assert peers is not None
        path = peers.path
        peers.leave()
        os.symlink(target, path)  # planted where the next worker would open it
        try:
            assert serving.Peers.join(sock) is None
            assert target.read_text() == "precious"
        finally:
            os.unlink(path)
            sock.close()


def test_out_of_file_descriptors_it_pauses_and_then_takes_the_waiting_connections(monkeypatch):
    monkeypatch.setattr(serving, "_PAUSE_WHEN_OUT", 0.2)
    sock = CountingSocket(failures=[OSError(errno.EMFILE, "Too many open files")])
    port = listening(sock)
    clients = ask(port, 2)
    with served(sock):
        answers = [answer(client) for client in clients]
    assert all(a.endswith(b"hello") for a in answers)
    assert sock.failed_at is not None and sock.first_taken_at is not None
    # waited out the 0.2 s pause (give or take the loop clock's millisecond steps) instead of trying again at once
    assert sock.first_taken_at - sock.failed_at >= 0.15


def test_it_stops_cleanly_and_then_the_port_refuses_connections():
    sock = CountingSocket()
    port = listening(sock)
    with served(sock):  # stopping asserts the server's thread ends
        assert answer(ask(port, 1)[0]).endswith(b"hello")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_one_worker_given_an_address_listens_the_same_way(monkeypatch):
    """`ahead serve` with WORKERS=1: uvicorn gives the loop an address, not a socket."""
    taken: list[int] = []
    accept = serving.Listener._accept
    monkeypatch.setattr(serving.Listener, "_accept", lambda self: (taken.append(1), accept(self))[1])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(hello, host="127.0.0.1", port=port, loop=SERVING_LOOP, lifespan="off",
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert answer(ask(port, 1)[0]).endswith(b"hello")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert taken, "the connection was accepted by uvloop's own server, not app/serving.py's"
    with pytest.raises(ConnectionRefusedError):  # the socket it made is closed with it
        socket.create_connection(("127.0.0.1", port), timeout=2)


# --- how long a client may take (`Deadlines`) ------------------------------------------------------------------


def closed_within(client: socket.socket, seconds: float) -> float:
    """Seconds until the server closed the connection (nothing answered), failing after `seconds`."""
    started = time.monotonic()
    client.settimeout(seconds)
    assert client.recv(4096) == b"", "the server answered instead of closing"
    client.close()
    return time.monotonic() - started


def test_a_connection_that_sends_nothing_is_closed_after_the_keep_alive_time():
    """uvicorn closed a connection left idle after an answer, never one that had not sent a byte: a thousand of
    those (a worker's usual file limit) and the worker took no other connection again."""
    sock = CountingSocket()
    port = listening(sock)
    with served(sock, timeout_keep_alive=2):
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        asking = socket.create_connection(("127.0.0.1", port), timeout=10)
        time.sleep(1.2)
        asking.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")  # within the time
        assert one_answer(asking).endswith(b"hello")
        assert 0.5 <= closed_within(silent, 5) <= 2.5  # (at 2 s from its start)
        # the one that asked, open as long as the silent one was, is still answered (idle 0.8 s of its 2)
        asking.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        assert answer(asking).endswith(b"hello")


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_a_request_head_must_be_in_within_its_time_however_it_trickles(monkeypatch, http):
    monkeypatch.setattr(serving, "HEAD_SECONDS", 0.6)
    sock = CountingSocket()
    port = listening(sock)
    with served(sock, http=http, timeout_keep_alive=30):
        trickling = socket.create_connection(("127.0.0.1", port), timeout=10)
        started, cut = time.monotonic(), False
        for byte in b"GET / HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"a" * 40:  # a byte every 50 ms: 3 s in all
            try:
                trickling.send(bytes([byte]))
            except OSError:
                cut = True
                break
            trickling.settimeout(0.05)
            try:
                if trickling.recv(1) == b"":
                    cut = True
                    break
            except TimeoutError:
                pass
            except OSError:  # closed with a byte of ours unread: the kernel resets rather than ends it
                cut = True
                break
        assert cut, "a head trickled in past its time was waited for"
        assert 0.5 <= time.monotonic() - started <= 2

        # A head in two parts within the time, after a keep-alive pause far longer than it: answered, and the next too
        kept = socket.create_connection(("127.0.0.1", port), timeout=10)
        kept.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        assert one_answer(kept).endswith(b"hello")
        time.sleep(1)  # idle between requests: uvicorn's keep-alive time (30 s) counts, not the head's
        kept.sendall(b"GET / HTTP/1.1\r\n")
        time.sleep(0.2)
        kept.sendall(b"Host: test\r\nConnection: close\r\n\r\n")
        assert answer(kept).endswith(b"hello")


async def body_length(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, then answers its length (notes a client that went away: `gone`)."""
    if scope["type"] != "http":
        return
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.append(received)
            return
        received += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    if scope["path"] == "/slow":
        await asyncio.sleep(1)  # the app's own time: never counted against the client
    body = str(received).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


gone: list[int] = []


@pytest.mark.parametrize("http", ["httptools", "h11"])  # uvicorn's two HTTP/1.1 protocols
def test_a_body_must_start_in_time_and_keep_coming(monkeypatch, http):
    monkeypatch.setattr(serving, "HEAD_SECONDS", 0.3)
    monkeypatch.setattr(serving, "BODY_SECONDS", 0.4)
    monkeypatch.setattr(serving, "BODY_BYTES_A_SECOND", 10_000)
    gone.clear()
    sock = CountingSocket()
    port = listening(sock)
    head = b"POST /%s HTTP/1.1\r\nHost: test\r\nContent-Length: 40000\r\nConnection: close\r\n\r\n"
    with served(sock, body_length, http=http, timeout_keep_alive=30):
        # Headers, a little of the body, then nothing: cut off, and the app is told the client went away
        stalled = socket.create_connection(("127.0.0.1", port), timeout=10)
        stalled.sendall(head % b"upload" + b"x" * 1000)
        assert 0.3 <= closed_within(stalled, 5) <= 2
        until(lambda: gone == [1000], "the app told the client is gone")

        # 40,000 bytes in 8 parts over 1.4 s, longer than BODY_SECONDS but each part buying 0.5 s more: answered
        steady = socket.create_connection(("127.0.0.1", port), timeout=10)
        steady.sendall(head % b"upload")
        for _ in range(8):
            time.sleep(0.2)
            steady.sendall(b"x" * 5000)
        assert answer(steady).endswith(b"\r\n\r\n40000")

        # The app taking longer than every client's time (1 s) is not the client's fault
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow.sendall(head % b"slow" + b"x" * 40000)
        assert answer(slow).endswith(b"\r\n\r\n40000")
    assert gone == [1000]


def received_all(client: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset after its answer counts as closing)."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := client.recv(65536):
            chunks.append(chunk)
    client.close()
    return b"".join(chunks)


def test_a_request_head_larger_than_its_bytes_is_refused_and_the_connection_closed():
    """uvicorn's httptools protocol set no limit: one connection sent 1.9 GB of a single header in 8 s, and the
    worker held it all."""
    sock = CountingSocket()
    port = listening(sock)
    asked: list[str] = []

    async def counted(scope: dict[str, Any], receive: Any, send: Any) -> None:
        asked.append(scope.get("method", ""))
        await hello(scope, receive, send)

    big = b"X-Big: " + b"a" * (serving.HEAD_BYTES + 10_000)
    with served(sock, counted, http="httptools"):
        for request in (b"GET / HTTP/1.1\r\nHost: test\r\n" + big,  # never ending
                        b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n" + big + b"\r\n\r\nhi"):  # whole
            huge = socket.create_connection(("127.0.0.1", port), timeout=10)
            with contextlib.suppress(OSError):  # (the server may close before all of it is sent)
                huge.sendall(request)
            refused = received_all(huge)
            assert refused.startswith(b"HTTP/1.1 431 ") and refused.endswith(b"The request's headers are too large.")
        assert asked == []  # the app never saw either

        # Under the limit it is an ordinary request, and a connection's many requests are counted one by one
        kept = socket.create_connection(("127.0.0.1", port), timeout=10)
        for _ in range(3):
            kept.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * (serving.HEAD_BYTES - 1_000)
                         + b"\r\n\r\n")
            assert one_answer(kept).endswith(b"hello")
        kept.close()
    assert asked == ["GET"] * 3


def test_the_rest_of_a_body_the_app_did_not_wait_for_is_allowed_and_then_the_next_request():
    sock = CountingSocket()
    port = listening(sock)
    body = b"x" * (4 * serving.HEAD_BYTES)
    with served(sock, http="httptools"):  # `hello` answers without reading the body
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        client.sendall(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert one_answer(client).endswith(b"hello")  # answered before its body was sent
        client.sendall(body)
        client.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        assert answer(client).endswith(b"hello")

        # A chunked body it did not wait for could be followed by anything: the connection is closed
        chunked = socket.create_connection(("127.0.0.1", port), timeout=10)
        chunked.sendall(b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert one_answer(chunked).endswith(b"hello")
        with contextlib.suppress(OSError):
            chunked.sendall(b"10000\r\n" + b"x" * 0x10000 + b"\r\n")
        assert received_all(chunked) == b""


BIG = 8 * 1024 * 1024  # more than the kernel's buffers hold for an unread connection on loopback


async def big_answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", str(BIG).encode())]})
    await send({"type": "http.response.body", "body": b"x" * BIG})


@pytest.mark.parametrize("close", [False, True])  # kept alive, or closing once sent (a close waits for the bytes)
def test_an_answer_left_unread_ends_the_connection_and_one_read_slowly_is_sent_whole(monkeypatch, close):
    """A client that never read held its answer and its connection for good. One that reads with pauses gets it all,
    even once uvicorn closes the connection for its keep-alive time (1 s here) while the answer still goes out."""
    monkeypatch.setattr(serving, "SEND_SECONDS", 1.5)
    sock = CountingSocket()
    port = listening(sock)
    request = b"GET / HTTP/1.1\r\nHost: test\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n"
    with served(sock, big_answer, timeout_keep_alive=1) as server:
        unread = socket.socket()
        unread.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        unread.connect(("127.0.0.1", port))
        unread.sendall(request)
        until(lambda: listener(server).holding == 1, "the connection taken")
        started = time.monotonic()
        until(lambda: listener(server).holding == 0, "the unread connection ended")  # (10 s at most)
        assert time.monotonic() - started >= 1.2
        unread.close()

        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow.sendall(request)
        received = 0
        while received < BIG:  # read with pauses, a few MB a second: never cut (what counts is the transport's buffer
            chunk = slow.recv(1 << 20)  # going down, which the kernel's buffers make coarse: megabytes at a time)
            assert chunk, f"cut after {received} bytes"
            received += len(chunk)
            time.sleep(0.2)
        slow.close()


def test_the_limit_of_open_files_is_raised_to_what_the_system_allows():
    """`ahead serve` raises it before starting its workers, which inherit it: at a soft limit of 1,024 a thousand
    idle connections shut every other client out."""
    script = ("import json, resource\n"
              "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
              "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
              "from app.serving import raise_file_limit\n"
              "print(json.dumps([raise_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE), hard]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    (before, after), (soft, hard), was_hard = json.loads(done.stdout)
    assert hard == was_hard  # the hard limit is the system's, never touched
    expected = hard if hard != -1 else serving.MAX_OPEN_FILES  # (-1: RLIM_INFINITY)
    assert (before, after, soft) == (256, expected, expected)


HELLO_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})
'''


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
def test_the_workers_stop_when_their_supervisor_is_killed_outright(tmp_path):
    """A walk-through killed `ahead serve`'s supervisor with SIGKILL: its two workers went on serving with nobody to
    replace them, and held the port, so the instance could not be started again."""
    import signal

    (tmp_path / "hello.py").write_text(HELLO_APP)
    port = free_port()
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "hello:app", "--app-dir", str(tmp_path), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "2", "--loop", SERVING_LOOP, "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "the workers never answered"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as client:
                    client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if b"hello" in client.recv(4096):
                        break
            except OSError:
                pass
            time.sleep(0.1)
        workers += [pid for pid in _children(supervisor.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert len(workers) == 2
        os.kill(supervisor.pid, signal.SIGKILL)
        supervisor.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in workers):
            assert time.monotonic() < deadline, "the workers outlived their supervisor"
            time.sleep(0.1)
        with pytest.raises(OSError):  # and the port is free: nothing listens there any more
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(timeout=10)
        for pid in workers:  # left behind if the test failed
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
