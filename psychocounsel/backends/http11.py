"""The lean HTTP/1.1 client under the ``openai`` backend: an asyncio ``Protocol`` per keep-alive connection
(one write per request; replies framed by Content-Length, chunked encoding or connection close), a pool of
them per replica (``Replica``), and the aiohttp path used where a proxy applies (``AiohttpReplica``).
Why it exists, and what it measures: ``openai_http.py``'s docstring."""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

from ..errors import UserError

# uvicorn (vLLM, SGLang) closes idle keep-alive connections after 5 s; reuse only younger ones.
KEEPALIVE_IDLE_S = 4.0
MAX_HEADER_BYTES = 65536


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time, reply parsed as bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.fut: asyncio.Future | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def start(self, data: bytes, loop: asyncio.AbstractEventLoop, deadline: float) -> asyncio.Future:
        self.fut = fut = loop.create_future()
        self.status = None
        self.got_bytes = False
        self.timer = loop.call_at(deadline, self._on_timeout)
        self.transport.write(data)
        return fut

    def data_received(self, data: bytes) -> None:
        if self.fut is None or self.fut.done():
            self.abort()  # bytes nobody asked for: the stream is out of step, never reuse it
            return
        self.got_bytes = True
        self.buf += data
        try:
            self._parse()
        except (ValueError, IndexError) as e:
            self._fail(ConnectionError(f"malformed HTTP reply: {e}"))

    def _parse(self) -> None:
        buf = self.buf
        while self.status is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise ValueError("header too large")
                return
            lines = buf[:end].decode("latin-1").split("\r\n")
            del buf[: end + 4]
            version, code = lines[0].split(" ", 2)[:2]
            status = int(code)
            if 100 <= status < 200:
                continue  # interim reply (100 Continue): the real one follows
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self.status, self.headers = status, headers
            self.keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self.mode, self.body = "chunked", bytearray()
            elif "content-length" in headers:
                self.mode, self.need = "length", int(headers["content-length"])
            elif status in (204, 304):
                self.mode, self.need = "length", 0
            else:
                self.mode, self.keep = "eof", False  # body runs to connection close
        if self.mode == "length":
            if len(buf) >= self.need:
                body = bytes(buf[: self.need])
                del buf[: self.need]
                self._done(body)
        elif self.mode == "chunked":
            while True:
                eol = buf.find(b"\r\n")
                if eol < 0:
                    return
                size = int(bytes(buf[:eol]).split(b";")[0], 16)
                if size == 0:
                    end = buf.find(b"\r\n\r\n", eol)  # end of (optional) trailers
                    if end < 0:
                        return
                    del buf[: end + 4]
                    self._done(bytes(self.body))
                    return
                if len(buf) < eol + 4 + size:
                    return
                self.body += buf[eol + 2: eol + 2 + size]
                del buf[: eol + 4 + size]

    def _done(self, body: bytes) -> None:
        self.timer.cancel()
        if self.buf:
            self.keep = False
        if not self.keep:
            self.abort()
        self.fut.set_result((self.status, self.headers, body))

    def _fail(self, exc: BaseException) -> None:
        if self.timer:
            self.timer.cancel()
        self.abort()
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(exc)

    def _on_timeout(self) -> None:
        self._fail(TimeoutError("timed out"))

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool:
        return False  # let the transport close; connection_lost settles the reply

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        fut = self.fut
        if fut is not None and not fut.done():
            if self.status is not None and self.mode == "eof":
                self.timer.cancel()
                fut.set_result((self.status, self.headers, bytes(self.buf)))
            else:
                self._fail(exc if isinstance(exc, OSError) else
                           ConnectionError("connection closed before the reply was complete"))


def ssl_context() -> ssl.SSLContext:
    """System trust store (honours SSL_CERT_FILE) plus certifi's bundle where installed."""
    ctx = ssl.create_default_context()
    try:
        import certifi

        ctx.load_verify_locations(certifi.where())
    except (ImportError, OSError):
        pass
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class Replica:
    """One base URL: its pooled connections, requests in flight, and health."""

    def __init__(self, base_url: str, auth_header: bytes, ssl_ctx: ssl.SSLContext | None):
        u = urlsplit(base_url.rstrip("/"))
        if u.scheme not in ("http", "https") or not u.hostname:
            raise UserError(f"base_urls: {base_url!r} is not an http(s) URL")
        self.url = base_url.rstrip("/")
        target = f"{u.path}/chat/completions" + (f"?{u.query}" if u.query else "")  # Azure: ?api-version=
        self.endpoint = f"{u.scheme}://{u.netloc}{target}"
        self.host, self.tls = u.hostname, u.scheme == "https"
        self.port = u.port or (443 if self.tls else 80)
        self.ssl = ssl_ctx if self.tls else None
        host_header = u.hostname if u.port is None else f"{u.hostname}:{u.port}"
        if ":" in u.hostname:
            host_header = f"[{u.hostname}]" + (f":{u.port}" if u.port else "")
        self.prefix = (f"POST {target} HTTP/1.1\r\nHost: {host_header}\r\n"
                       "Content-Type: application/json\r\nAccept: application/json\r\n"
                       "Accept-Encoding: identity\r\nUser-Agent: psychocounsel\r\n").encode() + auth_header
        self.idle: list[_Conn] = []
        self.in_flight = 0
        self.fails = 0
        self.down_until = 0.0

    async def post(self, body: bytes, deadline: float) -> tuple[int, dict[str, str], bytes]:
        loop = asyncio.get_running_loop()
        data = self.prefix + b"Content-Length: %d\r\n\r\n" % len(body) + body
        for _ in range(2):
            conn, reused = self._checkout(loop.time())
            if conn is None:
                conn = await self._connect(loop, deadline)
            fut = conn.start(data, loop, deadline)
            try:
                result = await fut
            except ConnectionError:
                # A pooled connection the server had already closed: resend once on a fresh one,
                # dropping the other idle ones too (a restarted server closed them all).
                if reused and not conn.got_bytes:
                    self.close()
                    continue
                raise
            except BaseException:
                conn._fail(ConnectionError("request abandoned"))  # cancelled mid-reply: unusable
                raise
            if not conn.closed:
                conn.idle_since = loop.time()
                self.idle.append(conn)
            return result
        raise ConnectionError("connection closed before the reply was complete")

    def _checkout(self, now: float) -> tuple[_Conn | None, bool]:
        while self.idle:
            conn = self.idle.pop()  # most recently used first: least likely to be stale
            fresh = now - conn.idle_since < KEEPALIVE_IDLE_S
            if fresh and not conn.closed and not conn.transport.is_closing():
                return conn, True
            conn.abort()
        return None, False

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Conn:
        coro = loop.create_connection(_Conn, self.host, self.port, ssl=self.ssl,
                                      server_hostname=self.host if self.tls else None)
        _, conn = await asyncio.wait_for(coro, max(0.001, deadline - loop.time()))
        return conn

    def close(self) -> None:
        for conn in self.idle:
            try:
                conn.abort()
            except RuntimeError:  # its loop is closed already; the socket closes when collected
                pass
        self.idle.clear()

    async def aclose(self) -> None:
        had = bool(self.idle)
        self.close()
        if had:
            await asyncio.sleep(0)  # let the aborted transports run connection_lost and close sockets


class AiohttpReplica(Replica):
    """Same contract over aiohttp, for proxies (trust_env) and as a measured alternative."""

    def __init__(self, base_url: str, auth_header: bytes, ssl_ctx: ssl.SSLContext | None):
        super().__init__(base_url, auth_header, ssl_ctx)
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth_header:
            self.headers["Authorization"] = auth_header.decode().split(":", 1)[1].strip()
        self.session = None

    async def post(self, body: bytes, deadline: float) -> tuple[int, dict[str, str], bytes]:
        import aiohttp

        if self.session is None:
            self.session = aiohttp.ClientSession(
                trust_env=True, connector=aiohttp.TCPConnector(limit=0, ssl=self.ssl or False))
        loop = asyncio.get_running_loop()
        timeout = aiohttp.ClientTimeout(total=max(0.001, deadline - loop.time()))
        try:
            async with self.session.post(self.endpoint, data=body,
                                         headers=self.headers, timeout=timeout) as r:
                data = await r.read()
                return r.status, {k.lower(): v for k, v in r.headers.items()}, data
        except aiohttp.ClientError as e:
            raise ConnectionError(str(e) or type(e).__name__) from None

    def close(self) -> None:
        self.session = None  # belongs to a loop that is gone; nothing left to await

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()
        self.session = None
