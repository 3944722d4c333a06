"""The control channel: frames (sans-IO, any split of the bytes), and the asyncio Channel over
a real socketpair: requests and replies, one-way messages, errors, EOF, a broken peer, fds."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeway.workers.control import (MAX_FRAME, Channel, ControlError, FrameDecoder, ProtocolError, encode,
                                     recv_fds, send_fds)

messages = st.lists(st.fixed_dictionaries({"t": st.sampled_from(["init", "state", "reply"])},
                                          optional={"id": st.integers(0, 2**31), "text": st.text(max_size=50),
                                                    "servers": st.lists(st.integers(), max_size=5)}),
                    max_size=6)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=100)
@given(messages, st.lists(st.integers(1, 40), max_size=20))
def test_any_split_of_the_bytes_gives_the_same_messages(msgs, cuts):
    data = b"".join(encode(m) for m in msgs)
    decoder, out, at = FrameDecoder(), [], 0
    for cut in cuts:
        out += decoder.feed(data[at:at + cut])
        at += cut
    out += decoder.feed(data[at:])
    assert out == msgs


@pytest.mark.parametrize("frame, why", [
    (struct.pack("!I", MAX_FRAME + 1), "at most"),
    (struct.pack("!I", 3) + b"{{{", "not JSON"),
    (struct.pack("!I", 2) + b"[]", "JSON object"),
    (struct.pack("!I", 8) + b'{"t": 1}', "JSON object"),
    # an id is an int: a list would not even be a key of the waiters, and true would be 1
    (struct.pack("!I", 22) + b'{"t":"reply","id":[1]}', "id"),
    (struct.pack("!I", 24) + b'{"t":"reply","id":true} ', "id"),
])
def test_a_bad_frame_is_a_protocol_error(frame, why):
    with pytest.raises(ProtocolError, match=why):
        FrameDecoder().feed(frame)


def test_a_frame_is_length_then_utf8_json():
    frame = encode({"t": "ready", "index": 1, "name": "é"})
    (length,) = struct.unpack("!I", frame[:4])
    assert length == len(frame) - 4
    assert json.loads(frame[4:].decode("utf-8")) == {"t": "ready", "index": 1, "name": "é"}


async def pair() -> tuple[Channel, Channel]:
    a, b = socket.socketpair()
    return await Channel.open(a, "a"), await Channel.open(b, "b")


def test_requests_replies_and_one_way_messages():
    async def main():
        sup, worker = await pair()

        async def serve():
            async for msg in worker:
                if msg["t"] == "op" and msg["op"] == "double":
                    worker.reply(msg, result=msg["args"]["n"] * 2)
                elif msg["t"] == "op":
                    worker.reply(msg, error=f"unknown op {msg['op']}")
                else:
                    worker.send({"t": "echo", "of": msg["t"]})

        server = asyncio.create_task(serve())
        got = []

        async def listen():
            async for msg in sup:
                got.append(msg)

        listener = asyncio.create_task(listen())
        results = await asyncio.gather(*(sup.request({"t": "op", "op": "double", "args": {"n": n}}, 2)
                                         for n in range(20)))
        assert results == [2 * n for n in range(20)]
        with pytest.raises(ControlError, match="unknown op nope"):
            await sup.request({"t": "op", "op": "nope"}, 2)
        sup.send({"t": "state"})
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
        assert got == [{"t": "echo", "of": "state"}]   # replies never reach the iteration
        worker.close()
        await asyncio.wait_for(listener, 2)             # EOF ends it
        assert sup.closed
        with pytest.raises(ControlError, match="closed"):
            sup.send({"t": "state"})
        with pytest.raises(ControlError, match="closed"):
            await sup.request({"t": "op", "op": "x"}, 1)
        server.cancel()
        sup.close()

    asyncio.run(main())


def test_a_request_fails_on_timeout_and_on_eof():
    async def main():
        sup, worker = await pair()
        listener = asyncio.create_task(sup.__anext__())
        with pytest.raises(ControlError, match="no answer"):
            await sup.request({"t": "op"}, 0.1)
        pending = asyncio.create_task(sup.request({"t": "op"}, 5))
        await asyncio.sleep(0.05)
        worker.close()
        with pytest.raises(ControlError, match="closed"):
            await pending
        with pytest.raises(StopAsyncIteration):
            await listener
        sup.close()

    asyncio.run(main())


def test_a_broken_peer_closes_the_channel():
    async def main():
        a, b = socket.socketpair()
        sup = await Channel.open(a, "worker 1")
        b.sendall(struct.pack("!I", 2) + b"[]")
        with pytest.raises(ProtocolError):
            await sup.__anext__()
        assert sup.closed
        b.close()

    asyncio.run(main())


def test_descriptors_travel_on_the_side_socketpair():
    a, b = socket.socketpair()
    r, w = os.pipe()
    try:
        send_fds(a, [r, w])
        got = recv_fds(b, 2)
        assert len(got) == 2
        os.write(got[1], b"x")
        assert os.read(r, 1) == b"x"
        for fd in got:
            os.close(fd)
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()
