"""A loopback HTTP proxy that damages request bodies, as a faulty network would.

`CorruptingProxy` listens on 127.0.0.1 and forwards every connection to an upstream
server, byte for byte, in a thread of its own with its own event loop. It parses the
requests going upstream (request line, headers, then a Content-Length or chunked body)
and records each one; for the requests its rule selects, it flips one byte in the middle
of the BODY (never in the headers), so the request still parses and only a checksum can
tell. Responses pass through untouched.

`refuse(select, status, code)` makes it answer the selected requests itself, as a server
that does not support something would: it reads the request (body included), answers
with an S3-style XML error and closes the connection; nothing reaches the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"
_PIECE = 256 * 1024
_KEPT = 4096
"""Bytes of each request body the proxy records (enough for a JSON resource)."""


@dataclass
class Request:
    """One request that went through the proxy."""

    method: str
    target: str
    headers: dict[str, str]  # names in lower case
    body_size: int = 0
    body_start: bytes = b""  # the first bytes of the body, as the client sent them
    corrupted: bool = False


@dataclass
class _Rule:
    select: Callable[[Request], bool] | None = None
    requests: list[Request] = field(default_factory=list)
    refuse: Callable[[Request], bool] | None = None
    answer: bytes = b""


class _Discard:
    """A writer that drops what it is given (the body of a request answered here)."""

    def write(self, data: bytes | bytearray) -> None:
        pass

    async def drain(self) -> None:
        pass


class CorruptingProxy:
    """Forwards 127.0.0.1:<port> to ``upstream()`` (host, port), corrupting request bodies
    that ``corrupt(select)`` selects until ``corrupt(None)``."""

    def __init__(self, upstream: Callable[[], tuple[str, int]]) -> None:
        self._upstream = upstream
        self._rule = _Rule()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def requests(self) -> list[Request]:
        """Every request forwarded so far, in the order they arrived."""
        with self._lock:
            return list(self._rule.requests)

    def corrupt(self, select: Callable[[Request], bool] | None) -> None:
        """Flip a body byte of every request ``select`` returns True for (None: stop)."""
        with self._lock:
            self._rule.select = select

    def refuse(
        self,
        select: Callable[[Request], bool] | None,
        status: int = 501,
        code: str = "NotImplemented",
    ) -> None:
        """Answer every request ``select`` returns True for with ``status`` and the S3
        error ``code`` instead of forwarding it (None: stop)."""
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>refused by the test proxy</Message></Error>"
        ).encode()
        head = (
            f"HTTP/1.1 {status} {code}\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with self._lock:
            self._rule.refuse, self._rule.answer = select, head + body

    def clear(self) -> None:
        """Forget the requests recorded so far."""
        with self._lock:
            self._rule.requests.clear()

    def __enter__(self) -> CorruptingProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout=10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        future = asyncio.run_coroutine_threadsafe(self._stop(), self._loop)
        with contextlib.suppress(Exception):
            future.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            host, port = self._upstream()
            server_reader, server_writer = await asyncio.open_connection(host, port)
        except OSError:
            client_writer.close()
            self._tasks.discard(task)
            return
        upstream = asyncio.ensure_future(
            self._requests(client_reader, server_writer, client_writer)
        )
        downstream = asyncio.ensure_future(_copy(server_reader, client_writer))
        try:
            await asyncio.wait([upstream, downstream], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for side in (upstream, downstream):
                side.cancel()
            await asyncio.gather(upstream, downstream, return_exceptions=True)
            for writer in (client_writer, server_writer):
                writer.close()
            self._tasks.discard(task)

    async def _requests(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
    ) -> None:
        """Forward requests one after another, each parsed so that its body is known."""
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            request = _parse(head)
            with self._lock:
                select = self._rule.select
                self._rule.requests.append(request)
                refuse, answer = self._rule.refuse, self._rule.answer
            if refuse is not None and refuse(request):
                await self._answer(reader, client, request, answer)
                return
            writer.write(head)
            damage = select is not None and select(request)
            if request.headers.get("transfer-encoding", "").lower() == "chunked":
                await self._chunked_body(reader, writer, request, damage)
            else:
                size = int(request.headers.get("content-length", "0") or 0)
                await self._body(reader, writer, request, size, damage)
            await writer.drain()

    async def _answer(
        self,
        reader: asyncio.StreamReader,
        client: asyncio.StreamWriter,
        request: Request,
        answer: bytes,
    ) -> None:
        """Read the request's body (after a 100 Continue if asked for), then answer."""
        if request.headers.get("expect", "").lower() == "100-continue":
            client.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await client.drain()
        sink: Any = _Discard()
        if request.headers.get("transfer-encoding", "").lower() == "chunked":
            await self._chunked_body(reader, sink, request, False)
        else:
            size = int(request.headers.get("content-length", "0") or 0)
            await self._body(reader, sink, request, size, False)
        client.write(answer)
        await client.drain()

    async def _body(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: Request,
        size: int,
        damage: bool,
    ) -> None:
        target = size // 2 if damage and size else -1
        sent = 0
        while sent < size:
            piece = bytearray(await reader.readexactly(min(_PIECE, size - sent)))
            if len(request.body_start) < _KEPT:
                request.body_start += bytes(piece[: _KEPT - len(request.body_start)])
            if sent <= target < sent + len(piece):
                piece[target - sent] ^= 0xFF
                request.corrupted = True
            writer.write(piece)
            await writer.drain()
            sent += len(piece)
        request.body_size += size

    async def _chunked_body(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: Request,
        damage: bool,
    ) -> None:
        while True:
            line = await reader.readuntil(b"\r\n")
            writer.write(line)
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    writer.write(trailer)
                writer.write(b"\r\n")
                return
            await self._body(reader, writer, request, size, damage and not request.corrupted)
            writer.write(await reader.readexactly(2))  # the CRLF after the chunk


def _parse(head: bytes) -> Request:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = [*lines[0].split(" ", 2), "", ""][:3]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return Request(method, target, headers)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(_PIECE):
        writer.write(data)
        await writer.drain()
