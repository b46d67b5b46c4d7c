"""Test support: a TCP relay on loopback that can be partitioned, to cut one process off from a
server (a coordinator from PostgreSQL) while others still reach it.

`partition()` stops relaying in both directions without closing anything: the client's
connections stay open and its reads wait, as across a network that drops every packet (the
harder case than a refused connection, which fails fast). New connections are accepted and
left waiting too. `heal()` relays again, what was sent meanwhile included.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from typing import Final

from coordinator.drills.harness import free_port

CHUNK: Final = 65536


class PartitionableProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._pending: dict[socket.socket, bytearray] = {}
        self._relaying = threading.Event()
        self._relaying.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proxy", daemon=True)

    def start(self) -> PartitionableProxy:
        self._thread.start()
        return self

    def partition(self) -> None:
        self._relaying.clear()

    def heal(self) -> None:
        self._relaying.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in [self._listener, *self._peers]:
            sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            relaying = self._relaying.is_set()
            for key, _ in self._selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                elif relaying:
                    self._relay(sock)
            if relaying:
                self._flush()
            else:
                self._stop.wait(0.05)  # unread data keeps select ready: do not spin on it

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        server = socket.create_connection(self.upstream, timeout=5)
        for sock in (client, server):
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ)
        self._peers[client], self._peers[server] = server, client

    def _relay(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        peer = self._peers.get(sock)
        if peer is None:
            return
        if not data:
            self._close(sock, peer)
            return
        self._pending.setdefault(peer, bytearray()).extend(data)
        self._flush()

    def _flush(self) -> None:
        for sock, buffer in list(self._pending.items()):
            try:
                sent = sock.send(buffer)
            except BlockingIOError:
                continue
            except OSError:
                self._pending.pop(sock, None)
                continue
            del buffer[:sent]
            if not buffer:
                self._pending.pop(sock, None)

    def _close(self, a: socket.socket, b: socket.socket) -> None:
        for sock in (a, b):
            self._pending.pop(sock, None)
            self._peers.pop(sock, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()
