"""Wire bytes in, wire bytes out: everything about a DNS query except the socket.

`Responder.respond(wire, client, transport)` returns the response bytes, `None` (drop the
query), or an awaitable of either when a handler had to go to the network: a `Later`
(edgeway.dns.later) when the handler gave one (the recursion handler), which the servers follow
with a callback, else a coroutine; or, for AXFR and IXFR over TCP, a `Stream` of messages
(edgeway.dns.transfer) that the TCP server writes one by one. It never raises, and neither does the awaitable: an input
that breaks a handler gets SERVFAIL and a log line, not a dead server.

Decisions (RFC 1035, RFC 6891, NSD's behaviour where they leave a choice):
- fewer than 12 bytes, or the QR bit set: dropped (no header to answer, or a response that
  must never be answered, which would allow reflection loops);
- any other message dnspython cannot parse, or not exactly one question: FORMERR, header only;
- opcode other than QUERY: NOTIMP; EDNS version above 0: BADVERS (RFC 6891 section 6.1.3);
- no handler answers: REFUSED;
- a TSIG-signed message (RFC 8945, edgeway.dns.tsig): verified first; a failure is answered
  NOTAUTH with BADKEY/BADSIG/BADTIME; a good one is answered as usual, signed, never from or
  into the fast path;
- AXFR/IXFR: edgeway.dns.transfer decides (allow_transfer, journal); REFUSED without it;
- the DO bit of the query's OPT record is copied into the response's (RFC 3225 section 3);
  the fast path's key holds the query's OPT, so DO and non-DO answers never mix;
- the answer is rendered for the client's UDP size (512 without EDNS, capped by ours); what
  does not fit in answer or authority sets TC=1, additional records are dropped silently (an
  RRset with its RRSIGs or not at all), and the apex NS a positive answer carries is left out
  with them rather than set TC=1 (as NSD: `_fit`).

The fast path: an authoritative answer depends only on the query's bytes after its ID, so
the rendered response is kept keyed on exactly those bytes (and the transport) and a repeat
costs one dict lookup. `invalidate()` empties it when zones change. An answer that follows
health (a policy record, edgeway.dns.records) is never kept whole: its question's bytes lead to
the record, which decides again for every question, and to the rendered answer of each
decision seen (`dynamic_udp`/`dynamic_tcp`); a health change shows in the very next answer.

Counting (edgeway.dns.counters, rendered by edgeway.dns.metrics): every answer is counted once,
by proto, qtype and rcode, with its duration; a fast-path entry carries the counter cell it adds
one to. Dropped messages are not answers and count only in `dropped`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import struct
import time
from bisect import bisect_left
from typing import Any, Awaitable, Sequence

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from edgeway.dns.counters import CACHE, DnsCounters
from edgeway.dns.handlers.base import Answer, Handler, Query
from edgeway.dns.later import Later, from_awaitable
from edgeway.dns.resolver.wire import parse_query, render, use_edns
from edgeway.dns.tsig import Signer, error_response, verify

log = logging.getLogger("edgeway.dns")
query_log = logging.getLogger("edgeway.dns.query")

_QR = 0x8000
_NO_EDNS_SIZE = 512
_FLAG_MASK_KEPT = int(dns.flags.RD | dns.flags.CD)  # copied from the query (RFC 1035, RFC 4035)
_OPCODE_MASK = 0x7800
_NOTIFY = int(dns.opcode.NOTIFY)
_RA, _RD = int(dns.flags.RA), int(dns.flags.RD)
_DO = int(dns.flags.DO)   # RFC 3225 section 3: copied from the query's OPT into the response's
_clock = time.perf_counter
_VARIANTS = 64          # rendered answers kept per question of a policy record
_XFR = (dns.rdatatype.AXFR, dns.rdatatype.IXFR)


class Responder:
    def __init__(
        self,
        handlers: Sequence[Handler],
        udp_payload_size: int = 1232,
        recursion_available: bool = False,
        log_queries: bool = False,
        fast_path_size: int = 100_000,
        counters: DnsCounters | None = None,
        transfers=None,
    ):
        self.handlers = list(handlers)
        self.udp_payload_size = udp_payload_size
        self.recursion_available = recursion_available
        self.log_queries = log_queries
        self.fast_path_size = fast_path_size
        # The resolver's fast path (edgeway.dns.resolver.wirecache): rendered cache hits whose
        # TTLs age and expire, for allowed clients only; owned by the recursion handler.
        self.wire_cache = next((h.wire_cache for h in self.handlers
                                if getattr(h, "wire_cache", None) is not None), None)
        # Precomputed answers per transport, keyed on the query bytes after the ID. The UDP
        # adapter reads `fast_udp` directly (the hot path of an authoritative server).
        self.fast_udp: dict[bytes, tuple[bytes, tuple]] = {}
        self.fast_tcp: dict[bytes, tuple[bytes, tuple, list]] = {}
        # Answers that follow health (policy records): per query bytes, [decide, {variant:
        # (response after the ID, counter cell)}, record]; decided again for every question.
        self.dynamic_udp: dict[bytes, list] = {}
        self.dynamic_tcp: dict[bytes, list] = {}
        # What was answered (edgeway.dns.counters): the service's, so a reload keeps counting.
        # A fast-path entry is (response after the ID, log fields, its counter cell).
        self.counters = counters if counters is not None else DnsCounters()
        self._duration = self.counters.duration
        self.dropped = 0      # messages not answered at all (no header, or a response)
        # NOTIFY (RFC 1996) for secondary zones: an edgeway.dns.notify_in.NotifyHandler, or None (NOTIMP)
        self.notify = None
        # Zone transfers and TSIG (edgeway.dns.transfer, edgeway.dns.tsig): the service's
        # Transfers, or None (transfers REFUSED, signed messages NOTAUTH).
        self.transfers = transfers

    # ------------------------------------------------------------------ entry point

    def respond(self, wire: bytes, client: tuple, transport: str) -> bytes | None | Awaitable[bytes | None]:
        started = _clock()
        key = wire[2:]
        cached = (self.fast_udp if transport == "udp" else self.fast_tcp).get(key)
        if cached is not None:
            cached[2][0] += 1
            if self.log_queries:
                self._log(client, transport, *cached[1], 0.0)
            duration, elapsed = self._duration, _clock() - started
            duration.counts[bisect_left(duration.bounds, elapsed)] += 1   # (Histogram.observe, inlined)
            duration.sum += elapsed
            return wire[:2] + cached[0]
        dynamic = (self.dynamic_udp if transport == "udp" else self.dynamic_tcp).get(key)
        if dynamic is not None and not self.log_queries:
            reply = self.dynamic_hit(dynamic, client)
            if reply is not None:
                duration, elapsed = self._duration, _clock() - started
                duration.counts[bisect_left(duration.bounds, elapsed)] += 1
                duration.sum += elapsed
                return wire[:2] + reply
        if self.wire_cache is not None and not self.log_queries:
            hit = self.wire_cache.get(wire, client, transport, started)
            if hit is not None:     # (the entry's cell counted it)
                duration, elapsed = self._duration, _clock() - started
                duration.counts[bisect_left(duration.bounds, elapsed)] += 1
                duration.sum += elapsed
                return hit
        try:
            result = self._respond(wire, client, transport, key, started)
        except Exception:  # a bug must cost one query, never the server
            log.exception("internal error answering a query from %s", _host(client))
            reply = self._servfail_header(wire)
            if reply is not None:
                self.counters.answered(transport, None, dns.rcode.SERVFAIL, _clock() - started)
            return reply
        return result

    def dynamic_hit(self, entry: list, client) -> bytes | None:
        """The answer (after the ID) to a repeated question of a policy record, decided now, or
        None when this decision's answer must be rendered in full. Counted here (the record's
        counters and the answer's cell); timed by the caller (the UDP server: by the run)."""
        variant, decision = entry[0](client)
        hit = entry[1].get(variant)
        if hit is None:
            if entry[3] is None:
                return None
            hit = entry[3](decision)       # (assembled: a decision not seen yet)
            if hit is None:
                return None
            if len(entry[1]) < _VARIANTS:
                entry[1][variant] = hit
        entry[2].count(decision)
        hit[1][0] += 1
        return hit[0]

    def invalidate(self) -> None:
        """Forget every precomputed answer (call after any zone change)."""
        self.fast_udp.clear()
        self.fast_tcp.clear()
        self.dynamic_udp.clear()
        self.dynamic_tcp.clear()
        if self.wire_cache is not None:
            self.wire_cache.clear()

    # ------------------------------------------------------------------ parsing

    def _respond(self, wire, client, transport, key, started):
        if len(wire) < 12:
            self.dropped += 1
            return None
        (flags,) = struct.unpack_from("!H", wire, 2)
        if flags & _QR:
            self.dropped += 1
            return None
        opcode = (flags >> 11) & 0xF     # (dns.opcode.from_flags, without building an enum)
        if opcode == _NOTIFY and self.notify is not None:
            reply = self.notify.respond(wire, client)
            if reply is not None:
                self.counters.answered(transport, dns.rdatatype.SOA, reply[3] & 0xF, _clock() - started)
            return reply
        try:
            # The hand-written parser reads plain queries (no EDNS options, no TSIG, nothing
            # after the last record) in a fifth of dnspython's time; anything else is dnspython's.
            query = parse_query(wire) or dns.message.from_wire(wire, ignore_trailing=False)
        except dns.message.UnknownTSIGKey:      # (a TSIG-signed message)
            if self.transfers is None:
                return self._header_only(wire, transport, dns.rcode.NOTAUTH, started)
            try:
                query = self._verified(wire, client, transport, started)
            except (dns.exception.DNSException, ValueError, IndexError, struct.error, UnicodeError):
                return self._header_only(wire, transport, dns.rcode.FORMERR, started)
            if type(query) is bytes:             # (the TSIG error answer)
                return query
        except (dns.exception.DNSException, ValueError, IndexError, struct.error, UnicodeError):
            return self._header_only(wire, transport, dns.rcode.FORMERR, started)
        if opcode != dns.opcode.QUERY:
            return self._reject(query, dns.rcode.NOTIMP, transport, started)
        if len(query.question) != 1:
            return self._reject(query, dns.rcode.FORMERR, transport, started)
        if query.edns > 0:
            return self._reject(query, dns.rcode.BADVERS, transport, started)
        question = query.question[0]
        request = Query(
            name=question.name,
            rdtype=question.rdtype,
            rdclass=question.rdclass,
            client=client,
            transport=transport,
            recursion_desired=bool(flags & _RD),   # (the header's int: no flag enum)
            message=query,
        )
        if question.rdtype in _XFR and self.transfers is not None:
            return self._transfer(query, request, transport, started)
        if dns.rdatatype.is_metatype(question.rdtype) and question.rdtype != dns.rdatatype.ANY:
            # AXFR/IXFR without transfers, MAILA/MAILB, OPT as a question: not served.
            return self._finish(query, request, Answer(rcode=dns.rcode.REFUSED), transport, key, started)
        return self._ask(query, request, 0, transport, key, started)

    # ------------------------------------------------------------------ TSIG and transfers

    def _verified(self, wire, client, transport, started):
        """The signed request, verified (a Message), or the bytes of its TSIG error answer."""
        verified = verify(wire, self.transfers.keyring)
        if not verified.error:
            return verified.message
        rdtype = verified.message.question[0].rdtype if verified.message.question else None
        log.warning("dns: TSIG %s from %s (key %s): answered NOTAUTH", verified.error_text, _host(client),
                    verified.keyname)
        self.counters.answered(transport, rdtype, dns.rcode.NOTAUTH, _clock() - started)
        return error_response(verified)

    def _transfer(self, query, request, transport, started):
        signer = None
        if getattr(query, "tsig", None) is not None and query.keyring:
            signer = Signer(query.keyring, query.tsig.name, query.mac, query.id, query.tsig[0].fudge)
        result = self.transfers.answer(query, signer, request.client, transport)
        if type(result) is bytes:
            rcode = result[3] & 0xF
        else:
            rcode = dns.rcode.NOERROR
        self.counters.answered(transport, request.rdtype, rcode, _clock() - started)
        if self.log_queries:
            self._log(request.client, transport, request.name, request.rdtype, rcode, 0, _clock() - started)
        return result

    # ------------------------------------------------------------------ the handler chain

    def _ask(self, query, request, first, transport, key, started):
        for index in range(first, len(self.handlers)):
            result = self.handlers[index].handle(request)
            if result is None:
                continue
            if type(result) is Later:
                return self._ask_later(result, query, request, index, transport, key, started)
            if inspect.isawaitable(result):
                return self._ask_async(result, query, request, index, transport, key, started)
            return self._finish(query, request, result, transport, key, started)
        return self._finish(query, request, Answer(rcode=dns.rcode.REFUSED), transport, key, started)

    def _ask_later(self, pending: Later, query, request, index, transport, key, started) -> Later:
        """The answer of a handler's Later, rendered from the callback that settles it."""
        out = Later()
        # (the wire cache's generation now: a clear before the answer comes means it is not kept)
        generation = self.wire_cache.generation if self.wire_cache is not None else None
        pending.then(functools.partial(self._answered, out, query, request, index, transport, key, started,
                                       generation))
        return out

    def _answered(self, out: Later, query, request, index, transport, key, started, generation,
                  answer, error) -> None:
        if isinstance(error, asyncio.CancelledError):
            out.settle(None, error)      # abandoned (the resolver is closing): no answer
            return
        try:
            if error is not None:
                raise error
            if answer is None:   # (passed on: the next handlers, as _ask_async does)
                result = self._ask(query, request, index + 1, transport, key, started)
                if inspect.isawaitable(result):
                    (result if type(result) is Later else from_awaitable(result)).then(out.settle)
                else:
                    out.settle(result)
                return
            wire = self._render_answer(query, answer, transport)
        except Exception:
            log.exception("internal error answering %s from %s", request.name, _host(request.client))
            out.settle(self._render(query, self._reply(query, dns.rcode.SERVFAIL), transport))
            self.counters.answered(transport, request.rdtype, dns.rcode.SERVFAIL, _clock() - started)
            return
        out.settle(wire)     # (the server sends it from here)
        try:                 # then the bookkeeping, off the answer's path
            self._keep(request, answer, transport, key, started, wire, generation)
        except Exception:
            log.exception("internal error keeping the answer to %s from %s", request.name, _host(request.client))

    async def _ask_async(self, pending, query, request, index, transport, key, started):
        generation = self.wire_cache.generation if self.wire_cache is not None else None
        try:
            answer = await pending
            if answer is None:
                answer = self._ask(query, request, index + 1, transport, key, started)
                if inspect.isawaitable(answer):
                    return await answer
                return answer
            return self._finish(query, request, answer, transport, key, started, generation)
        except Exception:
            log.exception("internal error answering %s from %s", request.name, _host(request.client))
            self.counters.answered(transport, request.rdtype, dns.rcode.SERVFAIL, _clock() - started)
            return self._render(query, self._reply(query, dns.rcode.SERVFAIL), transport)

    # ------------------------------------------------------------------ rendering

    def _finish(self, query, request: Query, answer: Answer, transport, key, started, generation=None) -> bytes:
        wire = self._render_answer(query, answer, transport)
        self._keep(request, answer, transport, key, started, wire, generation)
        return wire

    def _render_answer(self, query, answer: Answer, transport) -> bytes:
        response = self._reply(query, answer.rcode)
        if answer.authoritative:
            response.flags |= dns.flags.AA
        response.answer = answer.answer
        response.authority = answer.authority
        response.additional = answer.additional
        if answer.options and query.edns >= 0:
            # (the records' ECS echo; the DO bit stays as _reply copied it)
            response.use_edns(0, int(query.ednsflags) & _DO, self.udp_payload_size, options=answer.options)
        wire = self._render(query, response, transport)
        if transport == "udp" and (answer.authority or answer.additional):
            return self._fit(query, response, answer, wire)
        return wire

    def _fit(self, query, response, answer: Answer, wire: bytes) -> bytes:
        """NSD's choices for a UDP answer that did not fit whole: an RRset and its RRSIGs go
        together or not at all (dnspython's renderer cuts between them in the additional
        section), and the optional authority NS (with the additional section) is left out
        rather than truncating the answer. A re-render, for large answers only."""
        an, ns, ar = struct.unpack_from("!HHH", wire, 6)
        sizes = [sum(len(rrset) for rrset in section) for section in (response.answer, response.authority)]
        opt = 1 if response.opt is not None else 0
        if an != sizes[0] or ar - opt == sum(len(rrset) for rrset in response.additional):
            return wire     # all there, or the answer itself is truncated (TC=1): as rendered
        if ns != sizes[1]:
            if not answer.optional_authority:
                return wire
            response.authority, response.additional = [], []
            response.flags &= ~int(dns.flags.TC)
            return self._render(query, response, transport="udp")
        fitted, kept = ar - opt, 0
        for rrset in response.additional:
            if len(rrset) > fitted:
                break
            fitted -= len(rrset)
            kept += 1
        additional = response.additional
        if 0 < kept < len(additional) and additional[kept].rdtype == dns.rdatatype.RRSIG \
                and additional[kept].covers == additional[kept - 1].rdtype:
            response.additional = additional[:kept - 1]
            return self._render(query, response, transport="udp")
        return wire

    def _keep(self, request: Query, answer: Answer, transport, key, started, wire: bytes,
              generation: int | None = None) -> None:
        """Count, keep on the fast paths, log: what follows rendering an answer. `generation`:
        the wire cache's when the question was asked, for an answer that came later."""
        counters = self.counters
        elapsed = _clock() - started
        counters.answered(transport, request.rdtype, answer.rcode, elapsed)
        meta = (request.name, request.rdtype, answer.rcode, len(answer.answer))
        if self.wire_cache is not None and answer.source in ("cache", "recursion") and answer.rcode in (
                dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            self.wire_cache.put(key, wire, transport, _clock(),
                                counters.cell(transport, request.rdtype, answer.rcode, CACHE), request.client,
                                generation)
        # a TSIG-signed question's answer is signed for it: never kept for another
        signed = getattr(request.message, "tsig", None) is not None
        if answer.dynamic is not None:
            decide, variant, record, decision, template = answer.dynamic
            record.count(decision)
            if not signed:
                dynamic = self.dynamic_udp if transport == "udp" else self.dynamic_tcp
                entry = dynamic.get(key)
                if entry is None:
                    if len(dynamic) >= self.fast_path_size:
                        dynamic.clear()
                    entry = dynamic[key] = [decide, {}, record, None]
                if entry[3] is None and template is not None and decision.addresses:
                    # answers of addresses are assembled per decision from this one (any set of
                    # addresses: multivalue's samples too); others are kept per variant
                    entry[3] = template(wire, _NO_EDNS_SIZE if transport == "udp" else 65535,
                                        counters.cell(transport, request.rdtype, answer.rcode))
                if len(entry[1]) >= _VARIANTS:
                    entry[1].clear()       # (health flapping over many servers: start again)
                entry[1][variant] = (wire[2:], counters.cell(transport, request.rdtype, answer.rcode))
        elif answer.cacheable and not signed:
            fast = self.fast_udp if transport == "udp" else self.fast_tcp
            if len(fast) >= self.fast_path_size:
                fast.clear()  # cheaper than LRU bookkeeping on every hit; refills at once
            fast[key] = (wire[2:], meta, counters.cell(transport, request.rdtype, answer.rcode))
        if self.log_queries:
            self._log(request.client, transport, *meta, elapsed)

    def _reply(self, query: dns.message.Message, rcode: int) -> dns.message.Message:
        response = dns.message.Message(id=query.id)
        # Plain integers, not dnspython's flag enums (whose operators are Python code):
        # QR, the query's opcode, RD and CD copied, RA when recursion is offered.
        flags = int(query.flags)
        response.flags = _QR | (flags & (_OPCODE_MASK | _FLAG_MASK_KEPT)) | (_RA if self.recursion_available else 0)
        response.question = list(query.question)
        if query.edns >= 0:
            use_edns(response, int(query.ednsflags) & _DO, self.udp_payload_size)
        if 0 <= rcode < 16:
            response.flags |= rcode
        else:
            response.set_rcode(rcode)   # an extended RCODE (BADVERS): the OPT record carries the rest
        return response

    def _render(self, query, response, transport) -> bytes:
        if transport == "udp":
            size = min(query.payload, self.udp_payload_size) if query.edns >= 0 else _NO_EDNS_SIZE
            size = max(size, _NO_EDNS_SIZE)
        else:
            size = 65535
        if getattr(query, "tsig", None) is not None and query.keyring:     # (a verified signed request: RFC 8945 5.3)
            Signer(query.keyring, query.tsig.name, query.mac, query.id, query.tsig[0].fudge).sign_message(response)
            return response.to_wire(max_size=size, prefer_truncation=True, want_shuffle=False)
        # Records in zone-file order, as NSD (no shuffling: the fast path would freeze it anyway).
        # The hand-written renderer writes dnspython's bytes for the common record types in a
        # seventh of the time; dnspython does the rest, and every truncation.
        return render(response, size) or response.to_wire(max_size=size, prefer_truncation=True, want_shuffle=False)

    def _error_header(self, wire: bytes, rcode: int) -> bytes:
        """A header-only response for a message we could not parse (RFC 1035 4.1.1)."""
        (qid, flags) = struct.unpack_from("!HH", wire, 0)
        flags = (flags & (0x7800 | dns.flags.RD)) | _QR | (rcode & 0xF)
        if self.recursion_available:
            flags |= dns.flags.RA
        return struct.pack("!HHHHHH", qid, flags, 0, 0, 0, 0)

    def _header_only(self, wire: bytes, transport, rcode: int, started) -> bytes:
        """The answer to a message whose question could not be read (counted as qtype other)."""
        self.counters.answered(transport, None, rcode, _clock() - started)
        return self._error_header(wire, rcode)

    def _reject(self, query, rcode: int, transport, started) -> bytes:
        """NOTIMP, FORMERR (not one question) or BADVERS for a message that parsed."""
        response = self._reply(query, rcode)
        if rcode == dns.rcode.BADVERS:
            response.question = []
        wire = self._render(query, response, transport)
        rdtype = query.question[0].rdtype if len(query.question) == 1 else None
        self.counters.answered(transport, rdtype, rcode, _clock() - started)
        return wire

    def _servfail_header(self, wire: bytes) -> bytes | None:
        if len(wire) < 12:
            return None
        return self._error_header(wire, dns.rcode.SERVFAIL)

    # ------------------------------------------------------------------ query log

    def _log(self, client, transport, name, rdtype, rcode, count, seconds) -> None:
        host, qtype, rcode_text, us = _host(client), dns.rdatatype.to_text(rdtype), dns.rcode.to_text(rcode), \
            int(seconds * 1e6)
        # (the extra fields are the JSON log's: docs/operations.md, "Logs")
        query_log.info("%s %s %s %s %s answers=%d %dus", host, transport, name, qtype, rcode_text, count, us,
                       extra={"client": host, "proto": transport, "qname": str(name), "qtype": qtype,
                              "rcode": rcode_text, "answers": count, "duration_us": us})


def _host(client: Any) -> str:
    if isinstance(client, tuple) and len(client) >= 2:
        return f"[{client[0]}]:{client[1]}" if ":" in str(client[0]) else f"{client[0]}:{client[1]}"
    return str(client)
