"""A raw RESP client for byte-exact comparisons between minikv and redis-server.

Test-side code, not a library: it sends a command as a RESP array of bulk strings and
reads back exactly one reply as the raw bytes the server wrote, so two servers can be
compared byte for byte. It understands every RESP2 and RESP3 type only as far as it
needs to know where a reply ends; `parse` turns the raw bytes into a small tree for the
comparisons that must ignore order (SMEMBERS) or tolerate time (TTL).

Left out on purpose: RESP3 streamed strings and aggregates (`$?`, `*?`), which
redis-server never sends to clients, and any kind of connection pooling or retry.
"""

from __future__ import annotations

import socket
from typing import Iterable, Union

Arg = Union[bytes, str, int, float]

#: A reply with more than this many elements is a broken length, not a real reply.
MAX_AGGREGATE_LEN = 10_000_000

#: Types whose whole value is the rest of the first line.
LINE_TYPES = b"+-:_,#("
#: Types with a length line followed by that many bytes and a CRLF.
BLOB_TYPES = b"$=!"
#: Types with a count line followed by that many replies.
ARRAY_TYPES = b"*~>"
#: Types with a count line followed by twice that many replies (key, value).
MAP_TYPES = b"%|"


def to_bytes(arg: Arg) -> bytes:
    """Command arguments as Redis sees them: str as UTF-8, numbers in decimal."""
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode("utf-8")
    if isinstance(arg, bool):
        raise TypeError("pass booleans as explicit strings, not Python bools")
    if isinstance(arg, (int, float)):
        return repr(arg).encode("ascii")
    raise TypeError(f"cannot send {type(arg).__name__} as a RESP argument")


def encode_command(args: Iterable[Arg]) -> bytes:
    """One command as a RESP array of bulk strings (what every real client sends)."""
    parts = [to_bytes(a) for a in args]
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


class ServerClosed(ConnectionError):
    """The server closed the connection before a whole reply arrived."""


class RespConnection:
    """One TCP connection; `call` sends a command and returns its reply's raw bytes."""

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        #: Bytes received but not yet consumed by a reply: a server may send more
        #: than one reply per TCP segment (pipelining, pub/sub messages).
        self.buf = bytearray()
        self.timeout = timeout

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RespConnection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, *args: Arg) -> None:
        self.sock.sendall(encode_command(args))

    def send_raw(self, data: bytes) -> None:
        """Bytes exactly as given: for inline commands and protocol-error tests."""
        self.sock.sendall(data)

    def call(self, *args: Arg) -> bytes:
        self.send(*args)
        return self.read_reply()

    def read_reply(self) -> bytes:
        """Exactly one reply (an attribute `|` is returned together with its reply)."""
        end = self._reply_end(0)
        raw = bytes(self.buf[:end])
        del self.buf[:end]
        return raw

    def has_pending(self, wait: float = 0.0) -> bool:
        """Whether bytes are waiting (a push we did not ask for), within `wait` seconds."""
        if self.buf:
            return True
        self.sock.settimeout(wait if wait > 0 else 0.0001)
        try:
            chunk = self.sock.recv(65536)
        except (socket.timeout, BlockingIOError):
            return False
        finally:
            self.sock.settimeout(self.timeout)
        if not chunk:
            return True  # EOF is news too: the next read will raise ServerClosed
        self.buf += chunk
        return True

    # -- framing -----------------------------------------------------------------

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError(
                f"no complete reply within {self.timeout}s; got so far: {bytes(self.buf)!r}"
            ) from None
        if not chunk:
            raise ServerClosed(
                f"server closed the connection; partial reply: {bytes(self.buf)!r}"
            )
        self.buf += chunk

    def _line_end(self, pos: int) -> int:
        """Index just past the CRLF of the line starting at `pos`."""
        while True:
            i = self.buf.find(b"\r\n", pos)
            if i >= 0:
                return i + 2
            self._fill()

    def _reply_end(self, pos: int) -> int:
        """Index just past the reply starting at `pos`, reading more as needed."""
        while len(self.buf) <= pos:
            self._fill()
        kind = self.buf[pos]
        line_end = self._line_end(pos)
        if kind in LINE_TYPES:
            return line_end
        header = bytes(self.buf[pos + 1 : line_end - 2])
        try:
            n = int(header)
        except ValueError:
            raise AssertionError(f"bad length line {bytes(self.buf[pos:line_end])!r}") from None
        if kind in BLOB_TYPES:
            if n < 0:  # RESP2 null bulk string: $-1
                return line_end
            end = line_end + n + 2
            while len(self.buf) < end:
                self._fill()
            if self.buf[end - 2 : end] != b"\r\n":
                raise AssertionError(f"blob of length {n} not followed by CRLF")
            return end
        if kind in ARRAY_TYPES or kind in MAP_TYPES:
            if n < 0:  # RESP2 null array: *-1
                return line_end
            if n > MAX_AGGREGATE_LEN:
                raise AssertionError(f"implausible aggregate length {n}")
            count = n * 2 if kind in MAP_TYPES else n
            end = line_end
            for _ in range(count):
                end = self._reply_end(end)
            if kind == ord("|"):  # an attribute is followed by the reply it annotates
                end = self._reply_end(end)
            return end
        raise AssertionError(f"unknown RESP type byte {chr(kind)!r} in {bytes(self.buf[pos:])!r}")


# -- parsing into a tree ------------------------------------------------------------
#
# A node is (type, value): type is the RESP type character ('$', '*', '%', ...);
# value is the bytes of a scalar (None for a null), or a tuple of nodes for an
# aggregate (a map's value is a tuple of (key, value) node pairs). Nodes compare with
# ==, so two replies that differ only in an order Redis does not promise can be
# compared after sorting.


def parse(raw: bytes):
    node, end = _parse_at(raw, 0)
    if end != len(raw):
        raise AssertionError(f"trailing bytes after one reply: {raw[end:]!r}")
    return node


def _parse_at(raw: bytes, pos: int):
    kind = chr(raw[pos])
    line_end = raw.index(b"\r\n", pos) + 2
    body = raw[pos + 1 : line_end - 2]
    if kind in "+-:,#(":
        return (kind, body), line_end
    if kind == "_":
        return ("_", None), line_end
    n = int(body)
    if kind in "$=!":
        if n < 0:
            return (kind, None), line_end
        return (kind, raw[line_end : line_end + n]), line_end + n + 2
    if n < 0:
        return (kind, None), line_end
    items = []
    at = line_end
    if kind in "%|":
        for _ in range(n):
            k, at = _parse_at(raw, at)
            v, at = _parse_at(raw, at)
            items.append((k, v))
        if kind == "|":
            inner, at = _parse_at(raw, at)
            return ("|", (tuple(items), inner)), at
        return (kind, tuple(items)), at
    for _ in range(n):
        item, at = _parse_at(raw, at)
        items.append(item)
    return (kind, tuple(items)), at


def is_error(raw: bytes) -> bool:
    return raw[:1] in (b"-", b"!")


def encode_node(node) -> bytes:
    """The RESP bytes of a parsed node (the inverse of `parse`)."""
    kind, value = node
    k = kind.encode()
    if kind == "_":
        return b"_\r\n"
    if kind in "+-:,#(":
        return k + value + b"\r\n"
    if value is None:
        return k + b"-1\r\n"
    if kind in "$=!":
        return k + b"%d\r\n" % len(value) + value + b"\r\n"
    if kind == "%":
        return k + b"%d\r\n" % len(value) + b"".join(encode_node(a) + encode_node(b) for a, b in value)
    if kind == "|":
        attrs, inner = value
        return (k + b"%d\r\n" % len(attrs)
                + b"".join(encode_node(a) + encode_node(b) for a, b in attrs) + encode_node(inner))
    return k + b"%d\r\n" % len(value) + b"".join(encode_node(n) for n in value)
