"""A minimal HTTP/1.1 keep-alive client on asyncio streams for load generation.

httpx spends ~2 ms of CPU per request; on a 2-core machine the load generator would take a core from the
server it measures. This client formats requests by hand and reads status line, headers and a
Content-Length body: ~0.1 ms per request. Bench use only; not a general HTTP client.
"""

from __future__ import annotations

import asyncio


class KeepAliveConnection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, *, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
        """Send one request and return (status, body); reconnects when the server closed the connection."""
        for attempt in (1, 2):
            if self.writer is None or self.writer.is_closing():
                await self._connect()
            assert self.reader is not None and self.writer is not None
            head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
            head += [f"{name}: {value}" for name, value in headers.items()]
            self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            try:
                await self.writer.drain()
                status_line = await self.reader.readline()
                if not status_line:
                    raise ConnectionResetError("closed by server")
                status = int(status_line.split()[1])
                length, close = 0, False
                while True:
                    line = await self.reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    lowered = name.strip().lower()
                    if lowered == "content-length":
                        length = int(value.strip())
                    elif lowered == "connection" and value.strip().lower() == "close":
                        close = True
                payload = await self.reader.readexactly(length) if length else b""
                if close:
                    self.writer.close()
                    self.writer = None
                return status, payload
            except (ConnectionError, asyncio.IncompleteReadError):
                self.writer = None
                if attempt == 2:
                    raise
        raise RuntimeError("unreachable")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
