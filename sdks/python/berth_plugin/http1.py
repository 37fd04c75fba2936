"""A small HTTP/1.1 server side: request heads, bodies (length or chunked) and responses.

Only what protocol v1 needs: no pipelining concurrency, no upgrades, no HTTP/2.
"""

from __future__ import annotations

import asyncio
import http
import time

#: Largest request head (request line and header fields) accepted; the protocol asks for 8 KiB
#: of headers, this leaves room for a long request line on top. Larger heads get 431.
MAX_HEAD_BYTES = 16 * 1024
MAX_HEADER_COUNT = 100
MAX_CHUNK_LINE_BYTES = 4096
#: A Content-Length with more digits than this is read as :data:`HUGE_LENGTH` (over any limit).
MAX_LENGTH_DIGITS = 18
HUGE_LENGTH = 10**MAX_LENGTH_DIGITS
#: How long a keep-alive connection may sit idle before the server closes it.
IDLE_TIMEOUT = 300.0
#: How long the rest of a request may take to arrive once it has started, per read.
READ_TIMEOUT = 60.0

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX = frozenset(b"0123456789abcdefABCDEF")


class HttpError(Exception):
    """A request the server cannot read; answered with this status, then the connection closes."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class BodyTooLarge(Exception):
    """The body grew past the limit while it was read."""


class ClientGone(Exception):
    """The peer closed the connection or stopped sending."""


class Request:
    """A parsed request head."""

    __slots__ = ("method", "target", "path", "version", "headers", "framing", "length", "keep_alive", "expect_continue")

    def __init__(self, method: str, target: str, version: str, headers: list[tuple[str, str]]) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        path = target
        if "://" in path and not path.startswith("/"):
            # absolute-form: keep the path only
            rest = path.split("://", 1)[1]
            path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        self.path = path.split("?", 1)[0].split("#", 1)[0]
        self.framing = "none"
        self.length = 0
        self.keep_alive = True
        self.expect_continue = False

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        """Every value of header ``name``, in order."""
        name = name.lower()
        return [value for key, value in self.headers if key == name]


def parse_head(head: bytes) -> Request:
    """Parses a request head (without its final blank line). Raises :class:`HttpError`."""
    # Lines end with CRLF; a bare LF is accepted too (RFC 9112 §2.2).
    lines = [line[:-1] if line.endswith(b"\r") else line for line in head.split(b"\n")]
    request_line = lines[0]
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HttpError(400, "bad_request", "the request line is not METHOD TARGET HTTP/1.1")
    method_b, target_b, version_b = parts
    if not all(c in _TOKEN for c in method_b):
        raise HttpError(400, "bad_request", "the request method is not a token")
    if version_b not in (b"HTTP/1.1", b"HTTP/1.0"):
        if version_b.startswith(b"HTTP/"):
            raise HttpError(505, "http_version_not_supported", "this plugin speaks HTTP/1.1 only")
        raise HttpError(400, "bad_request", "the request line does not end with HTTP/1.1")
    if any(c <= 0x20 or c == 0x7F for c in target_b):
        raise HttpError(400, "bad_request", "the request target holds a control character or a space")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in (0x20, 0x09):
            raise HttpError(400, "bad_request", "folded header lines are not accepted")
        name, sep, value = line.partition(b":")
        if not sep or not name or not all(c in _TOKEN for c in name):
            raise HttpError(400, "bad_request", "a header line is not NAME: VALUE")
        value = value.strip(b" \t")
        if any(c == 0 or c == 0x0D or c == 0x0A for c in value):
            raise HttpError(400, "bad_request", "a header value holds a control character")
        headers.append((name.decode("ascii").lower(), value.decode("latin-1")))
        if len(headers) > MAX_HEADER_COUNT:
            raise HttpError(431, "request_header_fields_too_large", f"more than {MAX_HEADER_COUNT} header fields")
    request = Request(method_b.decode("ascii"), target_b.decode("latin-1"), version_b.decode("ascii"), headers)
    _frame(request)
    return request


def _frame(request: Request) -> None:
    connection = {t.strip().lower() for v in request.header_all("connection") for t in v.split(",")}
    if request.version == "HTTP/1.0":
        request.keep_alive = "keep-alive" in connection
    else:
        request.keep_alive = "close" not in connection
    expect = request.header("expect")
    request.expect_continue = expect is not None and expect.strip().lower() == "100-continue"
    codings = [t.strip().lower() for v in request.header_all("transfer-encoding") for t in v.split(",") if t.strip()]
    if request.header_all("transfer-encoding"):
        if codings != ["chunked"]:
            request.keep_alive = False
            raise HttpError(501, "not_implemented", "only the chunked transfer coding is accepted")
        request.framing = "chunked"
        if request.header_all("content-length"):
            # Both framings at once is how requests get smuggled: answer, then close.
            request.keep_alive = False
        return
    lengths = [t.strip() for v in request.header_all("content-length") for t in v.split(",")]
    if not lengths:
        return
    if any(not t or not all("0" <= c <= "9" for c in t) for t in lengths):
        raise HttpError(400, "bad_request", "the Content-Length header is not one whole number")
    # Compared as text: int() refuses strings of thousands of digits, and a length that
    # long is over any body limit anyway.
    values = {t.lstrip("0") or "0" for t in lengths}
    if len(values) != 1:
        raise HttpError(400, "bad_request", "the Content-Length header is not one whole number")
    digits = values.pop()
    request.framing = "length"
    request.length = int(digits) if len(digits) <= MAX_LENGTH_DIGITS else HUGE_LENGTH


def encode_response(
    status: int,
    body: bytes,
    *,
    headers: list[tuple[str, str]] | None = None,
    content_type: str | None = "application/json",
    keep_alive: bool = True,
    http10: bool = False,
    head_only: bool = False,
) -> bytes:
    """The bytes of a response with ``Content-Length`` (none for 1xx/204/304)."""
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"]
    no_body = status == 204 or status == 304 or 100 <= status < 200
    if not no_body:
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
    for name, value in headers or ():
        lines.append(f"{name}: {value}")
    if not keep_alive:
        lines.append("Connection: close")
    elif http10:
        lines.append("Connection: keep-alive")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if no_body or head_only:
        return head
    return head + body


class Input:
    """A connection's incoming bytes, buffered so the server knows whether a request has begun."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self.buf = bytearray()

    async def _more(self, timeout: float | None) -> None:
        try:
            data = await asyncio.wait_for(self._reader.read(65536), timeout)
        except TimeoutError:
            raise ClientGone("timed out waiting for the client") from None
        except (ConnectionError, OSError) as e:
            raise ClientGone(str(e)) from None
        if not data:
            raise ClientGone("the client closed the connection")
        self.buf += data

    async def wait_for_request(self, timeout: float = IDLE_TIMEOUT) -> bool:
        """Waits for the first byte of the next request; False when the peer closes or idles out."""
        while True:
            # Blank lines between requests are allowed (RFC 9112 §2.2).
            while self.buf[:2] == b"\r\n":
                del self.buf[:2]
            while self.buf[:1] == b"\n":
                del self.buf[:1]
            if self.buf:
                return True
            try:
                await self._more(timeout)
            except ClientGone:
                return False

    async def read_head(self, timeout: float = READ_TIMEOUT) -> bytes:
        """The request head up to its blank line. Raises HttpError 431 when too large."""
        start = 0
        while True:
            # The head ends with an empty line: CRLF CRLF, or with bare LFs (RFC 9112 §2.2).
            end = self.buf.find(b"\n", start)
            while end >= 0:
                if self.buf[end + 1 : end + 2] == b"\n":
                    size = 2
                    break
                if self.buf[end + 1 : end + 3] == b"\r\n":
                    size = 3
                    break
                end = self.buf.find(b"\n", end + 1)
            if end >= 0:
                if end > MAX_HEAD_BYTES:
                    raise HttpError(431, "request_header_fields_too_large", _too_large_head())
                head = bytes(self.buf[:end])
                del self.buf[: end + size]
                return head
            if len(self.buf) > MAX_HEAD_BYTES + 4:
                raise HttpError(431, "request_header_fields_too_large", _too_large_head())
            start = max(0, len(self.buf) - 2)
            await self._more(timeout)

    async def read_exact(self, n: int, deadline: float | None) -> bytes:
        while len(self.buf) < n:
            await self._more(_timeout(deadline))
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def _read_line(self, deadline: float | None) -> bytes:
        start = 0
        while True:
            end = self.buf.find(b"\r\n", start)
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[: end + 2]
                return line
            if len(self.buf) > MAX_CHUNK_LINE_BYTES:
                raise HttpError(400, "bad_request", "a chunk header line is too long")
            start = max(0, len(self.buf) - 1)
            await self._more(_timeout(deadline))

    async def read_body(self, request: Request, limit: int, deadline: float | None = None) -> bytes:
        """The whole body. Raises BodyTooLarge past ``limit``, ClientGone, HttpError."""
        if request.framing == "length":
            if request.length > limit:
                raise BodyTooLarge()
            return await self.read_exact(request.length, deadline)
        if request.framing == "chunked":
            body = bytearray()
            async for chunk in self._chunks(deadline):
                if len(body) + len(chunk) > limit:
                    raise BodyTooLarge()
                body += chunk
            return bytes(body)
        return b""

    async def _chunks(self, deadline: float | None):
        while True:
            line = await self._read_line(deadline)
            size_text = line.split(b";", 1)[0].strip(b" \t")
            if not size_text or not all(c in _HEX for c in size_text) or len(size_text) > 16:
                raise HttpError(400, "bad_request", "a chunk size is not a hexadecimal number")
            size = int(size_text, 16)
            if size == 0:
                while await self._read_line(deadline):
                    pass  # trailer fields are ignored
                return
            # The chunk may be larger than the body limit: hand it over in pieces.
            left = size
            while left:
                if not self.buf:
                    await self._more(_timeout(deadline))
                piece = bytes(self.buf[:left])
                del self.buf[: len(piece)]
                left -= len(piece)
                yield piece
            if await self.read_exact(2, deadline) != b"\r\n":
                raise HttpError(400, "bad_request", "a chunk does not end with CRLF")

    async def discard_body(self, request: Request, max_bytes: int, timeout: float) -> bool:
        """Reads and drops the body so the connection can serve the next request.

        False when the body could not be drained within ``max_bytes``/``timeout``.
        """
        deadline = time.monotonic() + timeout
        try:
            if request.framing == "length":
                if request.length > max_bytes:
                    return False
                left = request.length
                while left:
                    if not self.buf:
                        await self._more(_timeout(deadline))
                    n = min(left, len(self.buf))
                    del self.buf[:n]
                    left -= n
                return True
            if request.framing == "chunked":
                seen = 0
                async for chunk in self._chunks(deadline):
                    seen += len(chunk)
                    if seen > max_bytes:
                        return False
                return True
            return True
        except (ClientGone, HttpError):
            return False

    async def linger(self, max_bytes: int, timeout: float) -> None:
        """Drops whatever the peer still sends for a while, so it can read the answer."""
        deadline = time.monotonic() + timeout
        seen = 0
        try:
            while seen < max_bytes:
                seen += len(self.buf)
                self.buf.clear()
                await self._more(_timeout(deadline))
        except ClientGone:
            pass


def _timeout(deadline: float | None) -> float:
    if deadline is None:
        return READ_TIMEOUT
    return max(0.0, min(READ_TIMEOUT, deadline - time.monotonic()))


def _too_large_head() -> str:
    return f"the request head is larger than this plugin's limit of {MAX_HEAD_BYTES} bytes"
