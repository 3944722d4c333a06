"""The supervisor's shared sockets: which addresses a config shares, and a reload's
prepare / commit / abort over them (all or nothing, removed ones closed at commit)."""

import socket

import pytest

from edgeway.config.loader import load_config_text
from edgeway.errors import EdgewayError
from edgeway.workers.sockets import SharedSockets, wanted
from tests.support.tools import free_port


def config(http: int, dns: int | None = None, extra: str = ""):
    text = f"""
upstreams: {{app: {{servers: [{{address: "127.0.0.1:9"}}]}}}}
listeners:
  - {{name: web, protocol: http, listen: "127.0.0.1:{http}", routes: [{{upstream: app}}]}}
  - {{name: dgram, protocol: udp, listen: "127.0.0.1:{http}", upstream: app}}
{extra}
"""
    if dns is not None:
        text += f'dns: {{listen: ["127.0.0.1:{dns}"]}}\n'
    return load_config_text(text, "e.yaml")


def test_what_a_config_shares():
    http, dns = free_port(), free_port()
    keys = set(wanted(config(http, dns, extra=f'  - {{name: l4, protocol: tcp, listen: "127.0.0.1:{dns + 1}", '
                                                'upstream: app}')))
    # tcp for http and tcp listeners, udp and tcp for dns; the L4 udp listener binds per worker
    assert keys == {("tcp", f"127.0.0.1:{http}"), ("udp", f"127.0.0.1:{dns}"), ("tcp", f"127.0.0.1:{dns}"),
                    ("tcp", f"127.0.0.1:{dns + 1}")}


def test_prepare_opens_what_is_added_and_commit_closes_what_is_removed():
    http, dns, other = free_port(), free_port(), free_port()
    shared = SharedSockets()
    shared.open(config(http))
    first = shared.all()
    assert [(s.kind, s.listen) for s in first] == [("tcp", f"127.0.0.1:{http}")]
    assert first[0].sock.getsockname() == ("127.0.0.1", http)
    added, removed = shared.prepare(config(other, dns))
    assert sorted(added) == sorted([("tcp", f"127.0.0.1:{dns}"), ("tcp", f"127.0.0.1:{other}"),
                                    ("udp", f"127.0.0.1:{dns}")])
    assert removed == [("tcp", f"127.0.0.1:{http}")]
    assert first[0].sock.fileno() >= 0       # nothing changed before the commit
    shared.commit(added, removed)
    assert first[0].sock.fileno() == -1
    assert len({s.id for s in shared.all()}) == 3 and first[0].id not in {s.id for s in shared.all()}
    shared.close()
    assert shared.all() == []


def test_a_bind_error_leaves_nothing_open():
    http, dns = free_port(), free_port()
    shared = SharedSockets()
    shared.open(config(http))
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", dns))
    try:
        with pytest.raises((OSError, EdgewayError), match=f"cannot listen on 127.0.0.1:{dns}"):
            shared.prepare(config(http, dns))
        # the dns tcp socket opened before the udp one failed (or after) is closed again
        probe = socket.socket()
        probe.bind(("127.0.0.1", dns))
        probe.close()
    finally:
        busy.close()
        shared.close()


def test_abort_closes_what_prepare_opened():
    http, other = free_port(), free_port()
    shared = SharedSockets()
    shared.open(config(http))
    added, _ = shared.prepare(config(other))
    socks = [s.sock for shares in added.values() for s in shares]
    shared.abort(added)
    assert all(s.fileno() == -1 for s in socks)
    assert [s.listen for s in shared.all()] == [f"127.0.0.1:{http}"]
    shared.close()
