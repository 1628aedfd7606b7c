"""The HTTP side of the ICR simulator: a threaded HTTP/1.1 server (keep-alive, always
``Content-Length``) on a background thread, which hands every request to one ``dispatch`` callable
and writes back the :class:`~.responses.Response` it returns.

``dispatch(method, target, headers, body, client_ip) -> (Response, dribble_seconds)``; a
``dribble_seconds`` > 0 sends the headers at once and then the body one byte per interval.
``stop()`` also drops every open keep-alive connection, so no client hangs on a stopped simulator.
"""

from __future__ import annotations

import http
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from .responses import Response

Dispatch = Callable[[str, str, Any, bytes, str], "tuple[Response, float]"]


class HTTPFrontEnd:
    """Serves ``dispatch`` over HTTP on ``host:port`` until ``stop()``."""

    def __init__(self, dispatch: Dispatch, stop_event: threading.Event,
                 on_connection: Callable[[], None] = lambda: None):
        self.dispatch = dispatch
        self.stop_event = stop_event
        self.on_connection = on_connection
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    def start(self, host: str, port: int) -> None:
        server = _Server((host, port), _Handler)
        server.front = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="icr-simulator", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` while serving, else None."""
        return None if self._server is None else self._server.server_address[:2]

    def _opened(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.add(conn)
        self.on_connection()

    def _closed(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.discard(conn)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256
    front: HTTPFrontEnd

    def handle_error(self, request, client_address) -> None:  # clients hanging up are normal here
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ICRSimulator/1.0"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.server.front._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.front._closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _dispatch(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        body = self.rfile.read(length) if length > 0 else b""
        resp, dribble = self.server.front.dispatch(self.command, self.path, self.headers, body,
                                                   self.client_address[0])
        if resp.reset:
            self.close_connection = True
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            except OSError:
                pass
            return
        self._write(resp, dribble)

    def _write(self, resp: Response, dribble: float = 0.0) -> None:
        status = resp.status
        lines = [
            f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n",
            f"Server: {self.server_version}\r\n",
            f"Date: {self.date_time_string()}\r\n",
        ]
        for k, v in resp.headers:
            lines.append(f"{k}: {v}\r\n")
        lines.append(f"Content-Length: {len(resp.body)}\r\n")
        if self.close_connection:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        try:
            if dribble > 0:  # headers at once, then the body one byte at a time
                self.wfile.write("".join(lines).encode("latin-1"))
                self.wfile.flush()
                stop = self.server.front.stop_event
                for i in range(len(resp.body)):
                    if stop.wait(dribble):
                        break
                    self.wfile.write(resp.body[i:i + 1])
                    self.wfile.flush()
                return
            self.wfile.write("".join(lines).encode("latin-1") + resp.body)
        except OSError:
            self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _dispatch

    def do_HEAD(self) -> None:
        self._write(Response(404, b""))
