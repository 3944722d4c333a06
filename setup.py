"""The compiled parts of the HTTP proxy: the whole-message scanner (src/edgeway/http/_headscan.c)
and the plain-HTTP listener's socket layer (src/edgeway/http/_rawio.c, Linux: epoll).
Everything else is in pyproject.toml."""
from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
setup(ext_modules=[Extension("edgeway.http._headscan", ["src/edgeway/http/_headscan.c"], extra_compile_args=FLAGS),
                   Extension("edgeway.http._rawio", ["src/edgeway/http/_rawio.c"], extra_compile_args=FLAGS)])
