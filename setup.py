"""The one compiled part: the proxy's whole-message scanner (src/edgeway/http/_headscan.c).
Everything else is in pyproject.toml."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("edgeway.http._headscan", ["src/edgeway/http/_headscan.c"],
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"])])
