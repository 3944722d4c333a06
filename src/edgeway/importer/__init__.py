"""Importers: other servers' configs translated into edgeway's (`edgeway import nginx`).

Sans-IO, in three parts: `nginx_conf.py` reads crossplane's parse (includes in place,
nginx's escapes, units, inheritance, defaults) and holds the report's items; `nginx.py`
translates the http blocks (servers, locations, nginx's orders as first-match routes) and
`nginx_upstreams.py` the upstream and stream blocks, into the config as a dict, where each
part came from, and a report of what was translated exactly, approximated or left out.
`command.py` is the thin edge that runs crossplane on the files and writes YAML.
"""
