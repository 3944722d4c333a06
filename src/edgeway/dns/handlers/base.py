"""The handler contract: one DNS question in, an answer (or "not mine") out.

A handler owns one source of answers (hosts overrides, policy records, local zones, the cache, recursion).
The responder offers a query to each handler in the fixed order of `edgeway.dns.handlers`
and the first one that returns an `Answer` wins; `None` passes the query on. A handler that
has to go to the network returns an awaitable, so the authoritative hot path never pays for
a coroutine: preferably a `Later` (edgeway.dns.later), which the responder and the servers
follow with callbacks (no task per question); any other awaitable gets a task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Protocol, Union

import dns.message
import dns.name
import dns.rcode
import dns.rrset


@dataclass(frozen=True, slots=True)
class Query:
    """One question as the handlers see it (the name keeps the client's case)."""

    name: dns.name.Name
    rdtype: int
    rdclass: int
    client: tuple  # (host, port) of the client
    transport: str  # "udp" or "tcp"
    recursion_desired: bool
    message: object = None  # the parsed query: a dns.message.Message, or a wire.PlainQuery for a plain one


@dataclass(slots=True)
class Answer:
    """What a handler found; the responder turns it into a response message.

    `cacheable` allows the responder to keep the rendered wire answer on its fast path
    (only answers that depend on nothing but the question and the zones: not the client,
    not time, as cached or recursive answers do).
    """

    rcode: int = dns.rcode.NOERROR
    authoritative: bool = False
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)
    cacheable: bool = False
    source: str = ""  # which handler answered ("hosts", "zones", "records", "cache", "recursion")
    options: list = field(default_factory=list)   # EDNS options of the response (the records' ECS echo)
    # An answer that depends on health or the client, not only on the question (the records
    # handler): (decide, variant, record, decision, template). `decide(client)` returns
    # (variant, decision) for a later question with the same bytes; the responder keeps one
    # rendered answer per variant, or, with `template(wire, limit, cell)` (which returns a
    # function of a decision: its response after the ID, or None), assembles the answer of
    # any set of addresses from this one. A repeat costs a decision, never a stale answer.
    dynamic: tuple | None = None
    # The authority section is only the zone's NS that a positive answer may carry (RFC 1034
    # 4.3.2 step 3a): over UDP it is left out, with the additional section, rather than
    # truncating the answer (as NSD).
    optional_authority: bool = False


HandlerResult = Union[Answer, None, Awaitable[Union[Answer, None]]]


class Handler(Protocol):
    name: str

    def handle(self, query: Query) -> HandlerResult: ...
