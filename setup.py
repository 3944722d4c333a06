"""The compiled parts of the HTTP proxy (src/edgeway/http/): the whole-message scanner
(_headscan.c), the plain-HTTP listener's socket layer (_rawio.c, Linux: epoll) and the access
log's batch formatter (_logfmt.c); and the DNS server's batched datagram I/O (_udpio.c, Linux:
recvmmsg/sendmmsg).
Everything else is in pyproject.toml."""
from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
OUTBUF = ["src/edgeway/http/_outbuf.h"]
setup(ext_modules=[Extension("edgeway.http._headscan", ["src/edgeway/http/_headscan.c"], depends=OUTBUF,
                             extra_compile_args=FLAGS),
                   Extension("edgeway.http._rawio", ["src/edgeway/http/_rawio.c"], extra_compile_args=FLAGS),
                   Extension("edgeway.http._udpio", ["src/edgeway/http/_udpio.c"], extra_compile_args=FLAGS),
                   Extension("edgeway.http._logfmt", ["src/edgeway/http/_logfmt.c"], depends=OUTBUF, libraries=["m"],
                             extra_compile_args=FLAGS)])
