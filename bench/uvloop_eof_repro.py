"""Reproduce the uvloop 0.23.0 crash seen with half-close forwarding, and the variant that avoids it.

    python bench/uvloop_eof_repro.py LISTEN_PORT UPSTREAM_PORT naive|close
    wrk -t1 -c50 -d8s -H 'Connection: close' http://127.0.0.1:LISTEN_PORT/    # upstream: nginx

naive: every EOF is forwarded with write_eof() and eof_received returns True, also when the
       other direction has already ended, so both transports stay open, half-closed twice,
       until the peers go away. On the bench machine (2026-11-25, uvloop 0.23.0, Python 3.11.7)
       this died with "double free or corruption (!prev)" within 8 s in 3 of 3 runs.
close: the same, except that the second EOF closes both transports instead of calling
       write_eof() again (what edgeway.l4.relay does): 0 crashes in 3 runs of 8 s, and
       edgeway itself survived 140k+ connections of the same load.
"""

import asyncio
import sys

import uvloop

MODE = sys.argv[3] if len(sys.argv) > 3 else "naive"


class Up(asyncio.Protocol):
    def __init__(self, down):
        self.down, self.eof = down, False

    def connection_made(self, transport):
        self.t = transport

    def data_received(self, data):
        self.down.t.write(data)

    def eof_received(self):
        self.eof = True
        if MODE == "close" and self.down.eof:
            self.down.t.close()
            return False
        if not self.down.t.is_closing():
            self.down.t.write_eof()
        return True

    def connection_lost(self, exc):
        self.down.t.close()


class Down(asyncio.Protocol):
    def connection_made(self, transport):
        self.t, self.up, self.early, self.eof = transport, None, [], False
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self):
        try:
            _, self.up = await asyncio.get_running_loop().create_connection(
                lambda: Up(self), "127.0.0.1", int(sys.argv[2]))
        except OSError:
            self.t.close()
            return
        if self.early:
            self.up.t.write(b"".join(self.early))

    def data_received(self, data):
        if self.up is None:
            self.early.append(data)
        else:
            self.up.t.write(data)

    def eof_received(self):
        self.eof = True
        if self.up is not None and MODE == "close" and self.up.eof:
            self.up.t.close()
            return False
        if self.up is not None and not self.up.t.is_closing():
            self.up.t.write_eof()
        return True

    def connection_lost(self, exc):
        if self.up is not None:
            self.up.t.close()


async def main():
    await asyncio.get_running_loop().create_server(Down, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    await asyncio.sleep(3600)


uvloop.run(main())
