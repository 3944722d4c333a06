"""TSIG (RFC 8945): the keys of `dns.tsig_keys`, checking a request's signature, signing answers.

dnspython does the cryptography (`dns.tsig`, `dns.message`); this module adds what a server
needs around it:

- reading a key file: the base64 secret alone, or the `key "name" { algorithm ..; secret ".."; };`
  block that `tsig-keygen`, `ldns-keygen` users and `knotc`/`keymgr -t` print;
- `verify(wire, keyring)`: the request's TSIG checked, and on failure the RFC 8945 section
  5.2 error to send back (unknown key or algorithm -> NOTAUTH + BADKEY, wrong MAC -> NOTAUTH +
  BADSIG, both unsigned (MAC size 0, section 5.3.2); time outside the fudge -> NOTAUTH +
  BADTIME, signed, with the request's Time Signed and the server's time in Other Data);
- `Signer`: signs the answer, or every message of a transfer (RFC 8945 section 5.3.1: each
  message's MAC covers the previous one's), with the request's MAC as the first prior MAC.

Nothing here opens a socket: bytes in, bytes or decisions out (tested in tests/unit).
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.renderer
import dns.tsig

from edgeway.errors import EdgewayError

# The algorithms NSD and Knot accept, by the names their configs (and ours) use.
ALGORITHMS: dict[str, dns.name.Name] = {
    "hmac-md5": dns.tsig.HMAC_MD5,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
}
FUDGE = 300    # seconds of clock skew accepted (RFC 8945 section 10 recommends 300)

Keyring = dict[dns.name.Name, dns.tsig.Key]


class TsigKeyError(EdgewayError):
    """A key file that cannot be used; the message says what is wrong with it."""


@dataclass(frozen=True)
class KeyFile:
    """What a key file holds: the secret, and the name and algorithm when it is a key block."""

    secret: bytes
    name: str | None = None
    algorithm: str | None = None


_BLOCK = re.compile(r'key\s+"?([^"\s{]+)"?\s*\{(.*?)\}\s*;?', re.IGNORECASE | re.DOTALL)
_FIELD = re.compile(r'(algorithm|secret)\s+"?([^";\s]+)"?\s*;', re.IGNORECASE)
_COMMENT = re.compile(r"(#|//)[^\n]*")


def decode_secret(text: str) -> bytes:
    """A base64 secret -> bytes; TsigKeyError when it is not base64 or empty."""
    cleaned = "".join(text.split())
    if not cleaned:
        raise TsigKeyError("the secret is empty")
    try:
        secret = base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise TsigKeyError(f"the secret {cleaned[:12] + '...' if len(cleaned) > 12 else cleaned!r} "
                           "is not base64 (make one with `tsig-keygen` or `openssl rand -base64 32`)") from None
    if not secret:
        raise TsigKeyError("the secret is empty")
    return secret


def parse_key_text(text: str) -> KeyFile:
    """The secret alone (base64), or one `key "name" { algorithm ..; secret "..."; };` block."""
    body = _COMMENT.sub("", text)
    block = _BLOCK.search(body)
    if block is None:
        if "{" in body or "secret" in body.lower():
            raise TsigKeyError('expected the base64 secret alone, or key "NAME" { algorithm ALG; secret "BASE64"; };')
        return KeyFile(decode_secret(body))
    fields = {k.lower(): v for k, v in _FIELD.findall(block.group(2))}
    if "secret" not in fields:
        raise TsigKeyError(f'the key block "{block.group(1)}" has no secret "...";')
    algorithm = fields.get("algorithm")
    if algorithm is not None:
        algorithm = algorithm.lower()
        if algorithm not in ALGORITHMS:
            raise TsigKeyError(f"the key block's algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    return KeyFile(decode_secret(fields["secret"]), block.group(1), algorithm)


def read_key_file(path: Path | str) -> KeyFile:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TsigKeyError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TsigKeyError(f"{path}: cannot read the key file: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return parse_key_text(text)
    except TsigKeyError as exc:
        raise TsigKeyError(f"{path}: {exc}") from None


def load_keyring(config) -> Keyring:
    """The keys of a DnsConfig (or of its `tsig_keys` list): name -> dns.tsig.Key.

    The files were read once when the config was validated; they are read again here so that
    a reload picks up a rotated secret. Raises TsigKeyError naming the file."""
    keys = getattr(config, "tsig_keys", config)
    keyring: Keyring = {}
    for key in keys:
        name = dns.name.from_text(key.name)
        keyring[name] = dns.tsig.Key(name, read_key_file(key.secret_file).secret, ALGORITHMS[key.algorithm])
    return keyring


# --------------------------------------------------------------------------- requests


@dataclass
class Verified:
    """A request's TSIG state after `verify`.

    `message` is the parsed request (None only when it could not be parsed at all); `key` the
    key that signed it (None: unsigned, or the key is unknown); `error` 0 when the signature is
    good (or absent), else BADKEY / BADSIG / BADTIME: the request must then be answered with
    `error_response()` and nothing else (RFC 8945 section 5.2)."""

    message: dns.message.Message | None
    key: dns.tsig.Key | None = None
    error: int = 0
    rdata: dns.rdtypes.ANY.TSIG.TSIG | None = None     # the request's TSIG record
    keyname: dns.name.Name | None = None

    @property
    def signed(self) -> bool:
        return self.rdata is not None

    @property
    def error_text(self) -> str:
        # (dns.rcode.to_text(16) says BADVERS: the EDNS and TSIG registries share the number)
        return {dns.rcode.BADKEY: "BADKEY", dns.rcode.BADSIG: "BADSIG", dns.rcode.BADTIME: "BADTIME"}.get(
            self.error, "ok")


def verify(wire: bytes, keyring: Keyring) -> Verified:
    """Parse `wire` and check its TSIG against `keyring` (see Verified).

    Raises what dns.message.from_wire raises for a message that does not parse (the caller
    answers FORMERR, as for any unparsable query)."""
    # keyring=False: parse and keep the TSIG record without checking it, to learn its key name.
    message = dns.message.from_wire(wire, keyring=False)
    if message.tsig is None:
        return Verified(message)
    rdata = message.tsig[0]
    keyname = message.tsig.name
    result = Verified(message, rdata=rdata, keyname=keyname)
    key = keyring.get(keyname)
    if key is None or key.algorithm != rdata.algorithm:
        result.error = dns.rcode.BADKEY       # (an unknown algorithm is BADKEY too: section 5.2.1)
        return result
    result.key = key
    try:
        checked = dns.message.from_wire(wire, keyring={keyname: key})
    except dns.tsig.BadTime:
        result.error = dns.rcode.BADTIME
        return result
    except (dns.tsig.BadSignature, dns.tsig.BadKey, dns.tsig.BadAlgorithm, dns.exception.FormError):
        result.error = dns.rcode.BADSIG
        return result
    result.message = checked
    return result


def error_response(verified: Verified, now: float | None = None) -> bytes:
    """The NOTAUTH answer to a request whose TSIG failed (RFC 8945 section 5.3.2).

    BADKEY and BADSIG: the TSIG record is sent back unsigned (MAC size 0), since the server
    cannot or must not compute a MAC with a key the client did not prove it holds. BADTIME: signed
    with the key, Time Signed copied from the request and the server's time in Other Data, so
    that the client can verify the answer and learn the skew."""
    query = verified.message
    rdata = verified.rdata
    assert query is not None and rdata is not None and verified.error
    renderer = dns.renderer.Renderer(query.id, 0x8000 | (query.flags & 0x7900) | dns.rcode.NOTAUTH, 65535)
    for question in query.question:
        renderer.add_question(question.name, question.rdtype, question.rdclass)
    renderer.write_header()
    if verified.error == dns.rcode.BADTIME and verified.key is not None:
        server_time = int(time.time() if now is None else now)
        other = struct.pack("!HI", (server_time >> 32) & 0xFFFF, server_time & 0xFFFFFFFF)
        tsig = rdata.replace(mac=b"", error=dns.rcode.BADTIME, other=other, original_id=query.id)
        signed, _ = dns.tsig.sign(renderer.get_wire(), verified.key, tsig, rdata.time_signed, rdata.mac)
        renderer._write_tsig(signed, verified.keyname)
    else:
        tsig = rdata.replace(mac=b"", error=verified.error, other=b"", original_id=query.id)
        renderer._write_tsig(tsig, verified.keyname)
    return renderer.get_wire()


# --------------------------------------------------------------------------- answers


class Signer:
    """Signs the messages of one answer: a single message, or each message of a transfer.

    `sign(renderer)` appends the TSIG record to a dns.renderer.Renderer whose sections are
    written (call `reserve` first so that the record fits: `renderer.reserve(signer.size)`)."""

    def __init__(self, key: dns.tsig.Key, keyname: dns.name.Name, request_mac: bytes, original_id: int,
                 fudge: int = FUDGE):
        self.key = key
        self.keyname = keyname
        self.request_mac = request_mac
        self.original_id = original_id
        self.fudge = fudge
        self._ctx = None
        self.size = (len(keyname.to_wire()) + 10 + len(key.algorithm.to_wire()) + 16
                     + dns.tsig.mac_sizes[key.algorithm])

    @classmethod
    def for_request(cls, verified: Verified) -> "Signer | None":
        """The signer of the answers to a verified request (None: the request was unsigned)."""
        if verified.key is None or verified.error or verified.message is None:
            return None
        return cls(verified.key, verified.keyname, verified.rdata.mac, verified.message.id,
                   verified.rdata.fudge)

    def sign(self, renderer: dns.renderer.Renderer, multi: bool = True) -> None:
        renderer.release_reserved()
        renderer.write_header()
        self._ctx = renderer.add_multi_tsig(self._ctx, self.keyname, self.key, self.fudge, self.original_id,
                                            0, b"", self.request_mac, self.key.algorithm)

    def sign_wire(self, wire: bytes) -> bytes:
        """`wire` (a whole message without TSIG, its ARCOUNT not counting one) with the next
        TSIG of this answer appended: what `sign` does for a Renderer, for messages packed
        without one (edgeway.dns.transfer). dnspython computes the MAC; only the record's
        fixed header is packed here."""
        template = dns.rdtypes.ANY.TSIG.TSIG(dns.rdataclass.ANY, dns.rdatatype.TSIG, self.key.algorithm, 0,
                                             self.fudge, b"", self.original_id, 0, b"")
        signed, self._ctx = dns.tsig.sign(wire, self.key, template, int(time.time()), self.request_mac,
                                          self._ctx, True)
        rdata = signed.to_wire()
        (arcount,) = struct.unpack_from("!H", wire, 10)
        return b"".join((wire[:10], struct.pack("!H", arcount + 1), wire[12:], self.keyname.to_wire(),
                         struct.pack("!HHIH", dns.rdatatype.TSIG, dns.rdataclass.ANY, 0, len(rdata)), rdata))

    def sign_message(self, response: dns.message.Message) -> None:
        """Make `response` (a dns.message.Message) sign itself when rendered: a one-message answer."""
        response.use_tsig(self.key, self.keyname, fudge=self.fudge, original_id=self.original_id,
                          algorithm=self.key.algorithm)
        response.request_mac = self.request_mac
