"""Importers: other servers' configs translated into edgeway's (`edgeway import nginx`).

`nginx.py` is sans-IO: it takes crossplane's parse of an nginx.conf and returns the edgeway
config as a dict, where each part came from, and a report of what was translated exactly,
approximated or left out. `command.py` is the thin edge that reads files and writes YAML.
"""
