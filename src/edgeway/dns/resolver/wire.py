"""A hand-written parser for the upstream responses of a resolution (the common case only).

dnspython's `Message.from_wire` is most of a cold resolution's CPU: it is general (TSIG,
UPDATE, every rdata type, XFR) and pays for it on each record. The responses of an iterative
resolution are nearly always plain QUERY responses holding A, AAAA, NS, CNAME, DNAME and SOA
records plus an OPT record; for those this builds the same `dns.message.Message` (the same
RRset, Name and rdata objects, so the cache and the renderer cannot tell the difference) for
about a third of the cost.

Anything else, and anything odd (another opcode, another rdata type, EDNS options, an
extended RCODE, a TSIG, a malformed message), returns None: the caller falls back to
dnspython, which then either parses it or raises exactly as before.
`tests/unit/dns/resolver/test_wire.py` checks the result against dnspython.
"""

from __future__ import annotations

import socket
import struct

import dns.exception
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.DNAME
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.SOA
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rrset

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_SOA_INTS = struct.Struct("!IIIII")
_QTAIL = struct.Struct("!HH")
_SINGLETONS = frozenset(t for t in (5, 6, 39) if dns.rdatatype.is_singleton(t))   # CNAME, SOA, DNAME
_IN = dns.rdataclass.IN
_A, _NS, _CNAME, _SOA, _AAAA, _DNAME, _OPT = 1, 2, 5, 6, 28, 39, 41


def _hashed(cls):
    """`cls` with its hash computed once, here, from the wire.

    dnspython hashes an rdata by rendering it in canonical form (`to_digestable`) each time,
    and an RRset hashes each rdata twice when it is added: most of what parsing a referral
    cost. The parser has the canonical form at hand (the address bytes, the lower-cased
    uncompressed names), so it stores `hash(canonical form)`, which is exactly dnspython's
    hash: equal rdata of either class still hash alike. Everything else is dnspython's class;
    an instance built another way (copy, pickling, `replace`) falls back to dnspython's hash."""
    def __hash__(self):
        try:
            return self._hash
        except AttributeError:
            return cls.__hash__(self)
    return type(cls.__name__, (cls,), {"__slots__": ("_hash",), "__hash__": __hash__,
                                       "__module__": __name__, "__qualname__": "_Hashed" + cls.__name__})


_A_CLASS, _AAAA_CLASS, _SOA_CLASS = (_hashed(c) for c in (dns.rdtypes.IN.A.A, dns.rdtypes.IN.AAAA.AAAA,
                                                           dns.rdtypes.ANY.SOA.SOA))
_HashedA, _HashedAAAA, _HashedSOA = _A_CLASS, _AAAA_CLASS, _SOA_CLASS   # (module-level names: picklable)
_HashedNS, _HashedCNAME, _HashedDNAME = (_hashed(c) for c in (dns.rdtypes.ANY.NS.NS, dns.rdtypes.ANY.CNAME.CNAME,
                                                               dns.rdtypes.ANY.DNAME.DNAME))
_NAME_RDATA = {_NS: _HashedNS, _CNAME: _HashedCNAME, _DNAME: _HashedDNAME}
_TYPES = {t: dns.rdatatype.RdataType(t) for t in (_A, _NS, _CNAME, _SOA, _AAAA, _DNAME)}
_CLASS_IN = dns.rdataclass.RdataClass(_IN)


_set = object.__setattr__
_Name = dns.name.Name
_RRset = dns.rrset.RRset
_NONE = dns.rdatatype.NONE


def _rrset(name: dns.name.Name, rdclass, rdtype) -> dns.rrset.RRset:
    """`dns.rrset.RRset(name, rdclass, rdtype)`, without its three chained __init__ calls (an
    RRset is a Rdataset is a Set: one Python frame each, on every RRset of every response)."""
    rrset = object.__new__(_RRset)
    rrset.items = {}
    rrset.rdclass, rrset.rdtype, rrset.covers, rrset.ttl = rdclass, rdtype, _NONE, 0
    rrset.name, rrset.deleting = name, None
    return rrset


def _copy(rrset: dns.rrset.RRset) -> dns.rrset.RRset:
    """`rrset.copy()` (a shallow copy), without the clone protocol's chain of calls and the
    attribute test that fails with an exception on every copy."""
    copy = object.__new__(_RRset)
    copy.items = rrset.items.copy()
    copy.rdclass, copy.rdtype, copy.covers, copy.ttl = rrset.rdclass, rrset.rdtype, rrset.covers, rrset.ttl
    copy.name, copy.deleting = rrset.name, rrset.deleting
    return copy


def _name(labels: tuple) -> dns.name.Name:
    """A Name of checked labels (dnspython's constructor checks each label again)."""
    name = object.__new__(_Name)
    _set(name, "labels", labels)
    return name


def _name_rdata(cls, kind, target, hashed: int):
    """An NS, CNAME or DNAME rdata (the most frequent records of a referral), as `_new` does."""
    rdata = object.__new__(cls)
    _set(rdata, "rdclass", _CLASS_IN)
    _set(rdata, "rdtype", kind)
    _set(rdata, "rdcomment", None)
    _set(rdata, "target", target)
    _set(rdata, "_hash", hashed)
    return rdata


def _new(cls, **slots):
    """An immutable dnspython object without its checking constructor: the values were
    checked here already (dnspython's __init__ validation is half of its parsing cost)."""
    obj = object.__new__(cls)
    for key, value in slots.items():
        _set(obj, key, value)
    return obj


class _Unsupported(Exception):
    """Not for this parser: the caller uses dnspython."""


class _Reader:
    __slots__ = ("data", "names")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.names: dict[int, dns.name.Name] = {}   # offset -> name (compression points back)

    def name(self, offset: int) -> tuple[dns.name.Name, int]:
        """The name at `offset` and the offset after it (RFC 1035 4.1.4 compression)."""
        data, names = self.data, self.names
        known = names.get(offset)
        labels: list[bytes] = []
        starts: list[int] = []
        position = offset
        end = -1
        hops = 0
        while known is None:
            length = data[position]
            if length == 0:
                if end < 0:
                    end = position + 1
                known = dns.name.root
                break
            if length >= 0xC0:
                pointer = ((length & 0x3F) << 8) | data[position + 1]
                if end < 0:
                    end = position + 2
                hops += 1
                if pointer >= position or hops > 127:
                    raise _Unsupported("bad compression pointer")
                position = pointer
                known = names.get(position)
                continue
            if length > 63:
                raise _Unsupported("bad label")
            starts.append(position)
            labels.append(data[position + 1:position + 1 + length])
            position += 1 + length
            if position > len(data):
                raise _Unsupported("truncated name")
        if end < 0:
            end = _skip_name(data, offset)
        if not labels:
            return known, end
        # Build every suffix once, shortest first, so that later pointers into it are free.
        name = known
        size = sum(len(label) + 1 for label in name.labels)
        for start, label in zip(reversed(starts), reversed(labels)):
            size += len(label) + 1
            if size > 255:
                raise _Unsupported("name too long")
            name = _name((label,) + name.labels)
            names[start] = name
        return name, end


def _canonical(name: dns.name.Name) -> bytes:
    """The name's wire form, uncompressed and lower-cased (RFC 4034 6.2). A length byte is
    below 64, never an ASCII capital, so lower-casing the whole is safe."""
    return b"".join([bytes((len(label),)) + label for label in name.labels]).lower()


def _skip_name(data: bytes, position: int) -> int:
    while True:
        length = data[position]
        if length == 0:
            return position + 1
        if length >= 0xC0:
            return position + 2
        position += 1 + length


_OPT_RRSETS: dict[tuple[int, int], dns.rrset.RRset] = {}


def use_edns(message: dns.message.Message, flags: int, payload: int) -> None:
    """`message.use_edns(0, flags, payload)`, from a copy of the OPT RRset the first such call
    built (use_edns builds and hashes an OPT rdata: a third of parsing a referral, 10 us)."""
    template = _OPT_RRSETS.get((flags, payload))
    if template is None:
        message.use_edns(0, flags, payload)
        if len(_OPT_RRSETS) >= 64:
            _OPT_RRSETS.clear()
        _OPT_RRSETS[(flags, payload)] = message.opt.copy()
        return
    message.opt = _copy(template)
    message.request_payload = payload


def parse(data: bytes, sections: int = 3) -> dns.message.Message | None:
    """A Message as `dns.message.from_wire(data, ignore_trailing=True)` would build it, reading
    only the first `sections` record sections (the counts of the others are taken as zero),
    or None when dnspython has to do it."""
    try:
        return _parse(data, sections)[0]
    except (_Unsupported, IndexError, struct.error, ValueError, dns.exception.DNSException):
        return None


class PlainQuery:
    """A plain client query, as the responder reads it: the attributes of dnspython's
    `Message` that it uses (id, flags, question, edns, ednsflags, payload) and no more."""

    __slots__ = ("id", "flags", "question", "edns", "ednsflags", "payload")

    def __init__(self, qid: int, flags: int, question: list, edns: int, ednsflags: int, payload: int) -> None:
        self.id, self.flags, self.question = qid, flags, question
        self.edns, self.ednsflags, self.payload = edns, ednsflags, payload


def parse_query(data: bytes) -> PlainQuery | None:
    """A plain client query: one question of a QUERY, nothing else but maybe an EDNS0 OPT record
    without options, nothing after it. None for anything else: the responder gives that to
    dnspython (`from_wire`, which rejects trailing bytes), as before.

    The responder's first step for every question that misses its fast paths; building a
    dnspython `Message` for it cost 21 us, this about 4 (and several times both in the first
    question after an idle spell)."""
    try:
        qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data, 0)
        if flags & 0x7800 or qdcount != 1 or ancount or nscount or arcount > 1:
            return None
        qname, position = _Reader(data).name(12)
        rdtype, rdclass = _QTAIL.unpack_from(data, position)
        position += 4
        edns = -1
        ednsflags = payload = 0
        if arcount:
            if data[position] != 0:
                return None                  # an OPT record's owner is the root
            rrtype, payload, ednsflags, rdlen = _RR.unpack_from(data, position + 1)
            if rrtype != _OPT or rdlen or ednsflags & 0xFFFF0000:
                return None                  # another record, EDNS options, a version or extended RCODE
            edns = 0
            position += 11
        if position != len(data):
            return None
    except (_Unsupported, IndexError, struct.error):
        return None
    question = _rrset(qname, _CLASS_IN if rdclass == _IN else dns.rdataclass.RdataClass.make(rdclass),
                      _TYPES.get(rdtype) or dns.rdatatype.RdataType.make(rdtype))
    return PlainQuery(qid, flags, [question], edns, ednsflags, payload)


def _parse(data: bytes, sections: int) -> tuple[dns.message.Message, int]:
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data, 0)
    if flags & 0x7800:   # opcode other than QUERY
        raise _Unsupported("opcode")
    counts = (ancount, nscount, arcount)[:sections]
    message = dns.message.Message(id=qid)
    message.flags = flags
    reader = _Reader(data)
    position = 12
    for _ in range(qdcount):
        qname, position = reader.name(position)
        rdtype, rdclass = struct.unpack_from("!HH", data, position)
        position += 4
        message.question.append(_rrset(qname, _CLASS_IN if rdclass == _IN else dns.rdataclass.RdataClass.make(rdclass),
                                                _TYPES.get(rdtype) or dns.rdatatype.RdataType.make(rdtype)))
    for index, count in enumerate(counts):
        section = message.sections[index + 1]
        found: dict[tuple, dns.rrset.RRset] = {}   # (owner's lower-cased labels, type): as dnspython groups
        for _ in range(count):
            owner, position = reader.name(position)
            rdtype, rdclass, ttl, rdlen = _RR.unpack_from(data, position)
            position += 10
            end = position + rdlen
            if end > len(data):
                raise _Unsupported("truncated record")
            if rdtype == _OPT:
                if index != 2 or message.opt is not None or owner.labels != (b"",) or rdlen or ttl & 0xFFFF0000:
                    raise _Unsupported("OPT with options, an extended RCODE or another version")
                use_edns(message, ttl, rdclass)
                position = end
                continue
            if rdclass != _IN:
                raise _Unsupported("class")
            if ttl > 0x7FFFFFFF:   # RFC 2181 8: dnspython reads these as 0
                raise _Unsupported("ttl")
            kind = _TYPES.get(rdtype)
            if kind is None:
                raise _Unsupported("type")
            if rdtype == _A:
                if rdlen != 4:
                    raise _Unsupported("A length")
                raw = data[position:end]
                rdata = _new(_A_CLASS, rdclass=_CLASS_IN, rdtype=kind, rdcomment=None,
                             address=socket.inet_ntop(socket.AF_INET, raw), _hash=hash(raw))
            elif rdtype == _AAAA:
                if rdlen != 16:
                    raise _Unsupported("AAAA length")
                raw = data[position:end]
                rdata = _AAAA_CLASS(_CLASS_IN, kind, socket.inet_ntop(socket.AF_INET6, raw))
                _set(rdata, "_hash", hash(raw))
            elif rdtype == _SOA:
                mname, at = reader.name(position)
                rname, at = reader.name(at)
                if at + 20 != end:
                    raise _Unsupported("SOA length")
                serial, refresh, retry, expire, minimum = _SOA_INTS.unpack_from(data, at)
                rdata = _new(_SOA_CLASS, rdclass=_CLASS_IN, rdtype=kind, rdcomment=None, mname=mname, rname=rname,
                             serial=serial, refresh=refresh, retry=retry, expire=expire, minimum=minimum,
                             _hash=hash(_canonical(mname) + _canonical(rname) + data[at:end]))
            else:
                target, at = reader.name(position)
                if at != end:
                    raise _Unsupported("rdata length")
                rdata = _name_rdata(_NAME_RDATA[rdtype], kind, target, hash(_canonical(target)))
            position = end
            key = (tuple(map(bytes.lower, owner.labels)), rdtype)
            rrset = found.get(key)
            if rrset is None:
                rrset = found[key] = _rrset(owner, _CLASS_IN, kind)
                section.append(rrset)
            # rrset.add(rdata, ttl), inlined (it is the per-record cost that remained): the TTL
            # is the smallest seen, a singleton type keeps its last record, duplicates are merged.
            items = rrset.items
            if items:
                if ttl < rrset.ttl:
                    rrset.ttl = ttl
                if rdtype in _SINGLETONS:
                    items.clear()
            else:
                rrset.ttl = ttl
            items.setdefault(rdata, None)
    return message, position


# ===================================================================== rendering

_RRHEAD = struct.Struct("!HHIH")
_NAME_TARGET = {_NS: True, _CNAME: True, 12: True, _DNAME: False}   # PTR (12) too; DNAME is never compressed
_MX = 15


class _Writer:
    """dnspython's renderer, for the records a resolver answers with: the same bytes (name
    compression exactly as `dns.name.Name.to_wire` does it: every suffix of two or more labels
    remembered at its first offset below 0x4000), keyed on lower-cased labels, not on Names."""

    __slots__ = ("out", "compress")

    def __init__(self, header: bytes) -> None:
        self.out = bytearray(header)
        self.compress: dict[tuple[bytes, ...], int] = {}

    def name(self, name: dns.name.Name, compress: bool = True) -> None:
        labels = name.labels
        if not labels or labels[-1]:
            raise _Unsupported("relative name")
        out = self.out
        if not compress:
            for label in labels:
                out.append(len(label))
                out += label
            return
        table = self.compress
        key = tuple(map(bytes.lower, labels))
        for i, label in enumerate(labels):
            suffix = key[i:]
            pointer = table.get(suffix)
            if pointer is not None:
                out += (0xC000 + pointer).to_bytes(2, "big")
                return
            if len(suffix) > 1 and len(out) <= 0x3FFF:
                table[suffix] = len(out)
            out.append(len(label))
            out += label

    def rdata(self, rdtype: int, rd) -> None:
        out = self.out
        if rdtype == _A:
            out += socket.inet_pton(socket.AF_INET, rd.address)
        elif rdtype == _AAAA:
            out += socket.inet_pton(socket.AF_INET6, rd.address)
        elif rdtype in _NAME_TARGET:
            self.name(rd.target, _NAME_TARGET[rdtype])
        elif rdtype == _SOA:
            self.name(rd.mname)
            self.name(rd.rname)
            out += _SOA_INTS.pack(rd.serial, rd.refresh, rd.retry, rd.expire, rd.minimum)
        elif rdtype == _MX:
            out += rd.preference.to_bytes(2, "big")
            self.name(rd.exchange)
        else:
            raise _Unsupported("type")


def render(message: dns.message.Message, max_size: int) -> bytes | None:
    """`message.to_wire(max_size=max_size, prefer_truncation=True, want_shuffle=False)` for a
    response made of A, AAAA, NS, CNAME, DNAME, PTR, SOA and MX records and an OPT record
    without options; None when dnspython has to do it (another type, EDNS options, padding,
    TSIG, a relative name, or an answer that does not fit: truncation is dnspython's).

    Rendering is, with parsing, the rest of a resolved question's dnspython cost (35 us for
    one A record, mostly building and hashing a Name per suffix for the compression table).
    `tests/unit/dns/resolver/test_wire.py` checks the bytes against dnspython's."""
    try:
        wire = _render(message)
    except (_Unsupported, AttributeError, ValueError, OSError, OverflowError, struct.error):
        return None
    return wire if len(wire) <= max(512, min(max_size, 65535)) else None


def _render(message: dns.message.Message) -> bytes:
    if message.tsig is not None or message.pad:
        raise _Unsupported("TSIG or padding")
    opt = message.opt
    if opt is not None and (len(opt) != 1 or opt[0].options):
        raise _Unsupported("EDNS options")
    counts = [len(message.question), 0, 0, 0]
    writer = _Writer(_HEADER.pack(message.id, message.flags, 0, 0, 0, 0))
    out = writer.out
    for rrset in message.question:
        writer.name(rrset.name)
        out += _QTAIL.pack(rrset.rdtype, rrset.rdclass)
    for index, section in enumerate((message.answer, message.authority, message.additional), 1):
        for rrset in section:
            if rrset.deleting is not None or not rrset:
                raise _Unsupported("an empty or UPDATE RRset")
            rdtype, rdclass, ttl = rrset.rdtype, rrset.rdclass, rrset.ttl
            for rd in rrset:
                writer.name(rrset.name)
                at = len(out)
                out += _RRHEAD.pack(rdtype, rdclass, ttl, 0)
                writer.rdata(rdtype, rd)
                out[at + 8:at + 10] = (len(out) - at - 10).to_bytes(2, "big")
            counts[index] += len(rrset)
    if opt is not None:
        out += b"\0" + _RRHEAD.pack(_OPT, opt.rdclass, opt.ttl, 0)
        counts[3] += 1
    out[4:12] = struct.pack("!HHHH", *counts)
    return bytes(out)
