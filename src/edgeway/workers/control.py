"""The control channel between the supervisor and one worker (docs/operations.md, "Workers").

A stream socketpair per worker carries frames: a 4-byte big-endian length, then a UTF-8
JSON object. Every message has a type `t`; a request that wants an answer carries an int
`id`, and the answer is `{"t": "reply", "id": ..., "ok": true, "result": ...}` or
`{"t": "reply", "id": ..., "ok": false, "error": "why"}`. A frame that is too big, not a
JSON object, or with an `id` that is not an integer, is a protocol error: the peer is broken
(or not ours), and the channel closes. A well-formed message that cannot be applied (a field
missing) is the receiver's to log and skip.

File descriptors (listening sockets a reload opened) travel on a second socketpair with
SCM_RIGHTS (`send_fds` / `recv_fds`), sent just before the JSON message that lists them.

`FrameDecoder` and `encode` are the sans-IO part; `Channel` is the asyncio adapter.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import struct

from edgeway.errors import EdgewayError

MAX_FRAME = 64 * 1024 * 1024
_LENGTH = struct.Struct("!I")


class ControlError(EdgewayError):
    """A request on the control channel failed: the peer answered an error, did not answer in
    time, or the channel closed."""


class ProtocolError(ControlError):
    """The peer sent something that is not a frame of this protocol."""


def encode(msg: dict) -> bytes:
    """One message as a frame."""
    body = json.dumps(msg, separators=(",", ":"), default=str).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"control message {msg.get('t')!r} is {len(body)} bytes; at most {MAX_FRAME}")
    return _LENGTH.pack(len(body)) + body


class FrameDecoder:
    """Bytes in, messages out: `feed(data)` returns the messages its data completed."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict]:
        buffer = self._buffer
        buffer += data
        messages = []
        while len(buffer) >= 4:
            (length,) = _LENGTH.unpack_from(buffer)
            if length > MAX_FRAME:
                raise ProtocolError(f"control frame of {length} bytes; at most {MAX_FRAME}")
            if len(buffer) < 4 + length:
                break
            body = bytes(buffer[4:4 + length])
            del buffer[:4 + length]
            try:
                msg = json.loads(body)
            except ValueError as exc:
                raise ProtocolError(f"control frame is not JSON: {exc}") from None
            if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
                raise ProtocolError("control frame is not a JSON object with a type \"t\"")
            # (a list would fail as a key of the waiters, and true would stand for 1)
            if "id" in msg and (type(msg["id"]) is not int):
                raise ProtocolError(f"control frame's \"id\" is not an integer: {msg['id']!r}")
            messages.append(msg)
        return messages


class Channel:
    """A control channel over an asyncio stream pair.

    `send(msg)` writes a one-way message (synchronously: callable from any callback);
    `await request(msg, timeout)` sends a request and returns its result; `async for msg in
    channel` yields the peer's requests and one-way messages (replies go to `request`'s
    waiters), and ends at EOF or at a protocol error, after which every waiting request fails.
    Someone must iterate the channel for replies to arrive."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str = "peer"):
        self.reader = reader
        self.writer = writer
        self.name = name
        self.closed = False
        self._decoder = FrameDecoder()
        self._ready: list[dict] = []
        self._waiters: dict[int, asyncio.Future] = {}
        self._next_id = 1

    @classmethod
    async def open(cls, sock: socket.socket, name: str = "peer") -> "Channel":
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
        return cls(reader, writer, name)

    # ------------------------------------------------------------------ sending

    def send(self, msg: dict) -> None:
        if self.closed or self.writer.is_closing():
            raise ControlError(f"control channel to {self.name} is closed")
        self.writer.write(encode(msg))

    async def request(self, msg: dict, timeout: float) -> object:
        """Send `msg` with a fresh id; return the reply's result. ControlError when the peer
        answers an error, does not answer within `timeout` seconds, or the channel closes."""
        request_id = self._next_id
        self._next_id += 1
        future = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = future
        try:
            self.send({**msg, "id": request_id})
            try:
                return await asyncio.wait_for(future, timeout)
            except asyncio.TimeoutError:
                raise ControlError(f"{self.name}: no answer to {msg.get('t')!r} within {timeout:g}s") from None
        finally:
            self._waiters.pop(request_id, None)

    def reply(self, msg: dict, result: object = None, error: str | None = None) -> None:
        """Answer the request `msg` (a result, or an error text)."""
        answer = {"t": "reply", "id": msg.get("id"), "ok": error is None}
        if error is None:
            answer["result"] = result
        else:
            answer["error"] = error
        self.send(answer)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()
        self._fail_waiters(f"control channel to {self.name} closed")

    # ------------------------------------------------------------------ receiving

    def __aiter__(self) -> "Channel":
        return self

    async def __anext__(self) -> dict:
        while True:
            while self._ready:
                msg = self._ready.pop(0)
                if msg["t"] != "reply":
                    return msg
                future = self._waiters.get(msg.get("id"))
                if future is not None and not future.done():
                    if msg.get("ok"):
                        future.set_result(msg.get("result"))
                    else:
                        future.set_exception(ControlError(f"{self.name}: {msg.get('error') or 'failed'}"))
            try:
                data = await self.reader.read(1 << 16)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                self._fail_waiters(f"control channel to {self.name} closed (EOF)")
                self.close()
                raise StopAsyncIteration
            try:
                self._ready.extend(self._decoder.feed(data))
            except ProtocolError as exc:
                self.close()
                self._fail_waiters(f"control channel to {self.name}: {exc}")
                raise

    def _fail_waiters(self, why: str) -> None:
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(ControlError(why))


def send_fds(sock: socket.socket, fds: list[int]) -> None:
    """Pass descriptors on the fd socketpair (one byte of data carries them)."""
    if fds:
        socket.send_fds(sock, [b"F"], fds)


def recv_fds(sock: socket.socket, count: int) -> list[int]:
    """The `count` descriptors the peer sent with send_fds (they are queued before the message
    that names them, so this does not wait; a timeout on the socket bounds it anyway)."""
    fds: list[int] = []
    try:
        while len(fds) < count:
            data, got, flags, _addr = socket.recv_fds(sock, 1, count - len(fds))
            fds.extend(got)
            if not data:
                raise ProtocolError("the fd channel closed before the descriptors came")
            if flags & socket.MSG_CTRUNC:   # the kernel dropped some: no descriptor left here
                raise OSError(errno.EMFILE, "descriptors passed by the supervisor were lost "
                                            "(too many open files in this worker?)")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds
