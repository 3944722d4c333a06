"""_rawio (the plain-HTTP listener's epoll set, accept, Transport) on real loopback sockets,
driven by the input: clients connect, send, read part of what they get, half-close, close or
reset; the poller handles its events; the protocols' callbacks answer with writes, close,
abort, write_eof, pause/resume reading, an exception, dropping their transport, unlistening,
or closing the whole poller from inside the callback. The event loop is a fake whose
call_soon queue the input runs when it likes, so asyncio's timing is one more thing fuzzed.

Besides the sanitizers (use after free, overflow, undefined behaviour in the C code), the
Python-level contract of rawio.py is checked: connection_made once and first; nothing after
connection_lost, which comes exactly once, through call_soon, for every connection; the
protocol receives a prefix of what its client sent, in order, and the client a prefix of
what was written (all of it, then FIN, after a close that nothing cut short);
pause_writing/resume_writing alternate; a callback's exception reaches on_error.

    python fuzz/fuzz_rawio.py [libFuzzer flags] [corpus dirs]   (run.py sets up the sanitizers)
"""

import gc
import socket
import struct
import sys

import atheris

import fuzz_support  # first: it swaps in the sanitizer builds

from edgeway.http import _rawio  # noqa: E402  (the sanitizer build, see fuzz_support)

MAX_CLIENTS = 6
SIZES = [0, 1, 7, 100, 1500, 16_384, 65_536, 65_537, 200_000, 700_000]


class Failure(AssertionError):
    pass


FAILURES = []      # a check that fails inside a callback is caught by _rawio: kept here too


def check(condition, what):
    if not condition:
        FAILURES.append(what)
        raise Failure(what)


class FakeLoop:
    """What _rawio asks of the loop: call_soon, run when the input says (or at the end)."""

    def __init__(self):
        self.queue = []
        self.running = False

    def call_soon(self, callback, *args):
        self.queue.append((callback, args))

    def run(self, limit=None):
        count = 0
        while self.queue and (limit is None or count < limit):
            callback, args = self.queue.pop(0)
            self.running = True
            try:
                callback(*args)
            finally:
                self.running = False
            count += 1


class Deliberate(RuntimeError):
    """What a protocol callback raises on purpose (on_error must be handed exactly this)."""


class Protocol:
    def __init__(self, run):
        self.run = run
        self.transport = None
        self.made = self.lost = 0
        self.received = bytearray()
        self.written = bytearray()       # accepted by write() while the transport was open for writing
        self.eof = False
        self.closed_by_us = False        # close() called (graceful: pending data still goes out)
        self.cut = False                 # abort(), a deliberate exception, poller.close(): data may be lost
        self.shut = False                # write_eof() called
        self.write_paused = False
        self.peer = None

    # -- asyncio's protocol interface
    def connection_made(self, transport):
        check(self.made == 0 and self.lost == 0, "connection_made twice or after connection_lost")
        check(isinstance(transport, _rawio.Transport), "connection_made without a Transport")
        self.made = 1
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        check(isinstance(self.peer, tuple) and self.peer[0] == "127.0.0.1", f"peername {self.peer!r}")
        self.run.react(self, "made")

    def data_received(self, data):
        self.alive("data_received")
        check(isinstance(data, bytes) and data, "data_received without data")
        self.received += data
        self.run.react(self, "data")

    def eof_received(self):
        self.alive("eof_received")
        check(not self.eof, "eof_received twice")
        self.eof = True
        self.run.react(self, "eof")
        return self.run.fdp.ConsumeBool()

    def pause_writing(self):
        self.alive("pause_writing")
        check(not self.write_paused, "pause_writing twice in a row")
        self.write_paused = True
        self.run.react(self, "pause")

    def resume_writing(self):
        self.alive("resume_writing")
        check(self.write_paused, "resume_writing without pause_writing")
        self.write_paused = False
        self.run.react(self, "resume")

    def connection_lost(self, exc):
        check(self.run.loop.running, "connection_lost called from inside the transport, not through call_soon")
        check(self.made and not self.lost, "connection_lost twice or without connection_made")
        check(exc is None or isinstance(exc, OSError), f"connection_lost({exc!r})")
        self.lost = 1

    def alive(self, what):
        check(self.made and not self.lost, f"{what} after connection_lost (or before connection_made)")


class Run:
    """One input: its clients, the protocols the listener made, and the checks."""

    def __init__(self, fdp, listening):
        self.fdp = fdp
        self.listening = listening
        self.loop = FakeLoop()
        self.errors = []
        self.poller = _rawio.Poller(self.loop, self.on_error)
        self.listener = self.poller.listen(listening.fileno(), self.factory)
        self.poller_closed = False
        self.protocols = []
        self.clients = []                # [socket, sent bytearray, received bytearray, state]
        self.depth = 0
        self.deliberate = 0              # exceptions raised on purpose, not yet seen by on_error

    # -- what _rawio calls
    def factory(self):
        if self.fdp.ConsumeIntInRange(0, 31) == 0:
            self.deliberate += 1
            raise Deliberate("factory")
        protocol = Protocol(self)
        self.protocols.append(protocol)
        return protocol

    def on_error(self, what, exc):
        check(isinstance(what, str), f"on_error({what!r}, {exc!r}): accept failed on loopback")
        check(isinstance(exc, Deliberate), f"on_error({what!r}, {exc!r}): not the deliberate exception")
        check(self.deliberate > 0, "on_error more often than a callback raised")
        self.deliberate -= 1

    # -- the protocols' reactions, chosen by the input
    def react(self, protocol, when):
        if self.depth > 3:
            return
        self.depth += 1
        try:
            for _ in range(self.fdp.ConsumeIntInRange(0, 2)):
                self.transport_op(protocol, inside=True)
        finally:
            self.depth -= 1

    def transport_op(self, protocol, inside=False):
        fdp = self.fdp
        t = protocol.transport
        op = fdp.ConsumeIntInRange(0, 17 if inside else 15)
        if t is None:
            return
        if op <= 3:
            data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)) * (1 + fdp.PickValueInList(SIZES) // 64)
            if op == 3:
                self.write_recorded(protocol, lambda: t.writelines([data, memoryview(data)[:5], bytearray(b"x")]),
                                    data + data[:5] + b"x")
            else:
                self.write_recorded(protocol, lambda: t.write(data), data)
        elif op == 4:
            protocol.closed_by_us = True
            t.close()
            check(t.is_closing(), "is_closing() false after close()")
        elif op == 5:
            protocol.cut = True
            t.abort()
            check(t.is_closing(), "is_closing() false after abort()")
        elif op == 6:
            check(t.can_write_eof(), "can_write_eof")
            if not t.is_closing():
                protocol.shut = True
            t.write_eof()
        elif op == 7:
            t.pause_reading()
            check(not t.is_reading(), "is_reading() after pause_reading()")
        elif op == 8:
            t.resume_reading()
        elif op == 9:
            size = t.get_write_buffer_size()
            check(0 <= size <= len(protocol.written), f"get_write_buffer_size() = {size}")
        elif op == 10:
            name = fdp.PickValueInList(["peername", "sockname", "socket", 7])
            info = t.get_extra_info(name, "default")
            check(info is not None, f"get_extra_info({name!r})")
        elif op == 11:
            check(t.get_protocol() in (protocol, None), "get_protocol() is another protocol")
        elif op == 12:
            protocol.transport = None      # the protocol forgets it: only _rawio's references remain
        elif op == 13:
            t.set_protocol(protocol)
        elif op == 14:
            t._read_again()
        elif op == 15:
            self.loop.run(fdp.ConsumeIntInRange(0, 3))
        elif op == 16:
            self.deliberate += 1
            protocol.cut = True              # _rawio drops the connection after some callbacks' errors
            raise Deliberate("callback")
        elif op == 17:
            self.close_poller()

    def write_recorded(self, protocol, write, data):
        before = protocol.transport.is_closing() or protocol.shut
        write()
        if not before:
            protocol.written += data

    def close_poller(self):
        if self.fdp.ConsumeBool():
            self.poller.unlisten(self.listener)
        else:
            for protocol in self.protocols:
                if protocol.made and not protocol.lost:
                    protocol.cut = True
            self.poller.close()
            self.poller_closed = True
            check(self.poller.connections() == 0, "connections() after close()")

    # -- the clients' side
    def client_op(self):
        fdp = self.fdp
        op = fdp.ConsumeIntInRange(0, 11)
        if op == 0 or not self.clients:
            if len(self.clients) < MAX_CLIENTS:
                sock = socket.socket()
                sock.setblocking(False)
                if fdp.ConsumeBool():
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                try:
                    sock.connect(self.listening.getsockname())
                except BlockingIOError:
                    pass
                self.clients.append([sock, bytearray(), bytearray(), "open"])
            return
        client = self.clients[fdp.ConsumeIntInRange(0, len(self.clients) - 1)]
        sock, sent, received, state = client
        if op <= 3 and state == "open":
            data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64)) or b"\0"
            data = data * (1 + fdp.PickValueInList(SIZES) // len(data))
            try:
                sent += data[:sock.send(data)]
            except BlockingIOError:
                pass
            except ConnectionError:
                client[3] = "reset"          # (else the error is used up here and recv says b"")
            else:
                self.sent_after_close(sock)
        elif op <= 5 and state != "closed":
            self.client_read(client, fdp.PickValueInList([1, 100, 65_536, 1 << 20]))
        elif op == 6 and state == "open":
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            client[3] = "shut"
        elif op == 7 and state != "closed":
            if fdp.ConsumeBool():            # a reset rather than a FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            client[3] = "closed"
        elif op <= 9:
            if not self.poller_closed:
                self.poller.ready()
        elif op == 10:
            self.loop.run(fdp.ConsumeIntInRange(0, 4))
        else:
            live = [p for p in self.protocols if p.transport is not None and not p.lost]
            if live:
                self.transport_op(fdp.PickValueInList(live))

    def sent_after_close(self, sock):
        """The client sent while its connection was closing: the kernel may answer with a
        reset that discards what the server had still to send (TCP, not _rawio: a close with
        data unread), so that connection is no longer held to getting everything."""
        try:
            name = sock.getsockname()
        except OSError:
            return
        for protocol in self.protocols:
            if protocol.peer is not None and protocol.peer[:2] == name:
                t = protocol.transport
                if protocol.lost or protocol.closed_by_us or t is None or t.is_closing():
                    protocol.cut = True

    @staticmethod
    def client_read(client, size):
        """Read once: "data", "again" (nothing yet) or "end" (FIN or reset)."""
        sock, _, received, _ = client
        try:
            data = sock.recv(size)
        except (BlockingIOError, InterruptedError):
            return "again"
        except ConnectionError:
            client[3] = "reset"
            return "end"
        if not data:
            if client[3] in ("open", "shut"):   # after a reset recv says b"" too: still a reset
                client[3] = "eof"
            return "end"
        received += data
        return "data"

    # -- the end: drain, check, close everything
    def finish(self):
        protocols_of = {}
        for protocol in self.protocols:
            if protocol.peer is not None:
                protocols_of[protocol.peer[:2]] = protocol
        for _ in range(400):
            if self.poller_closed:
                break
            busy = False
            for client in self.clients:
                while client[3] in ("open", "shut") and self.client_read(client, 1 << 20) == "data":
                    busy = True
            self.poller.ready()
            self.loop.run()
            if not busy and not self.loop.queue:
                break
        for client in self.clients:
            sock, sent, received, state = client
            try:
                name = sock.getsockname()
            except OSError:
                name = None
            protocol = protocols_of.get(name)
            if protocol is None:
                continue
            check(bytes(sent).startswith(bytes(protocol.received)),
                  "the protocol received what its client did not send (or out of order)")
            check(bytes(protocol.written).startswith(bytes(received)),
                  "the client received what was not written (or out of order)")
            if state == "eof" and not protocol.cut:
                check(bytes(received) == bytes(protocol.written),
                      f"FIN after {len(received)} of the {len(protocol.written)} bytes written, nothing cut short")
        if not self.poller_closed:
            self.poller.close()
        self.loop.run()
        self.loop.run()
        for protocol in self.protocols:
            check(protocol.made, "a protocol was made but connection_made never came")
            check(protocol.lost == 1, "a connection without connection_lost after the poller closed")
        check(self.deliberate == 0, f"{self.deliberate} deliberate exception(s) never reached on_error")
        for client in self.clients:
            client[0].close()
        while True:                          # connections the poller never accepted
            try:
                self.listening.accept()[0].close()
            except BlockingIOError:
                break


LISTENING = None


def one_input(data: bytes) -> None:
    global LISTENING
    if LISTENING is None:
        LISTENING = socket.socket()
        LISTENING.bind(("127.0.0.1", 0))
        LISTENING.listen(128)
        LISTENING.setblocking(False)
    fdp = atheris.FuzzedDataProvider(data)
    FAILURES.clear()
    run = Run(fdp, LISTENING)
    try:
        for _ in range(fdp.ConsumeIntInRange(1, 48)):
            if fdp.remaining_bytes() == 0:
                break
            run.client_op()
        run.finish()
    except Failure:
        pass
    finally:
        for client in run.clients:
            client[0].close()
        if not run.poller_closed:
            run.poller.close()
            run.loop.run()
        del run
        gc.collect(0)
    if FAILURES:
        fuzz_support.mismatch(f"_rawio: {FAILURES[0]}", data)
        raise Failure(FAILURES[0])


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
