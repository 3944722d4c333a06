"""edgeway.dns.tsig: key files, request verification and the RFC 8945 errors, signing."""

import struct
import time

import dns.message
import dns.name
import dns.rcode
import dns.renderer
import dns.rdtypes.ANY.TSIG
import dns.tsig
import pytest

from edgeway.dns.tsig import Signer, TsigKeyError, error_response, parse_key_text, verify

SECRET = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="
NAME = dns.name.from_text("xfr-key.")
KEY = dns.tsig.Key(NAME, SECRET, dns.tsig.HMAC_SHA256)
KEYRING = {NAME: KEY}


def signed_query(key=KEY, qtype="AXFR", at=None) -> bytes:
    query = dns.message.make_query("example.com.", qtype)
    query.use_tsig(key)
    wire = query.to_wire()
    if at is None:
        return wire
    # signed at another time (dnspython's to_wire signs with time.time())
    template = dns.message.from_wire(wire, keyring=False).tsig[0]
    renderer = dns.renderer.Renderer(query.id, query.flags, 65535)
    renderer.add_question(query.question[0].name, query.question[0].rdtype)
    renderer.write_header()
    signed, _ = dns.tsig.sign(renderer.get_wire(), key, template.replace(mac=b""), int(at), b"")
    renderer._write_tsig(signed, key.name)
    return renderer.get_wire()


@pytest.mark.parametrize("text, name, algorithm", [
    (SECRET, None, None),
    (f"  {SECRET}\n\n", None, None),
    (f'key "xfr-key" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n', "xfr-key", "hmac-sha256"),
    (f'# made by tsig-keygen\nkey xfr-key {{ algorithm HMAC-SHA512; secret "{SECRET}"; }};', "xfr-key", "hmac-sha512"),
])
def test_key_files(text, name, algorithm):
    key = parse_key_text(text)
    assert key.secret == b"secretsecretsecretsecretsecret12"
    assert (key.name, key.algorithm) == (name, algorithm)


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("not base64!!", "is not base64"),
    ('key "k" { algorithm hmac-sha256; };', "has no secret"),
    (f'key "k" {{ algorithm hmac-foo; secret "{SECRET}"; }};', "not one of"),
    ("{ secret }", "expected the base64 secret alone"),
])
def test_bad_key_files(text, message):
    with pytest.raises(TsigKeyError, match=message):
        parse_key_text(text)


def test_unsigned_and_good_requests():
    plain = verify(dns.message.make_query("example.com.", "SOA").to_wire(), KEYRING)
    assert not plain.signed and plain.error == 0 and plain.key is None
    good = verify(signed_query(), KEYRING)
    assert good.signed and good.error == 0 and good.key == KEY
    assert good.message.question[0].rdtype == dns.rdatatype.AXFR


def test_unknown_key_is_badkey_unsigned():
    other = dns.tsig.Key("other-key.", SECRET, dns.tsig.HMAC_SHA256)
    result = verify(signed_query(other), KEYRING)
    assert result.error == dns.rcode.BADKEY and result.key is None
    wire = error_response(result)
    response = dns.message.from_wire(wire, keyring=False)
    assert response.rcode() == dns.rcode.NOTAUTH and response.id == result.message.id
    assert response.tsig[0].error == dns.rcode.BADKEY and response.tsig[0].mac == b""
    assert response.tsig.name == other.name


def test_other_algorithm_is_badkey():
    sha1 = dns.tsig.Key(NAME, SECRET, dns.tsig.HMAC_SHA1)
    assert verify(signed_query(sha1), KEYRING).error == dns.rcode.BADKEY


def test_wrong_secret_is_badsig_unsigned():
    wrong = dns.tsig.Key(NAME, "d3Jvbmd3cm9uZ3dyb25nd3Jvbmd3cm9uZ3dyb25nMTI=", dns.tsig.HMAC_SHA256)
    result = verify(signed_query(wrong), KEYRING)
    assert result.error == dns.rcode.BADSIG
    response = dns.message.from_wire(error_response(result), keyring=False)
    assert response.rcode() == dns.rcode.NOTAUTH
    assert response.tsig[0].error == dns.rcode.BADSIG and response.tsig[0].mac == b""


def test_time_skew_is_badtime_signed_with_the_server_time():
    asked_at = int(time.time()) - 3600
    result = verify(signed_query(at=asked_at), KEYRING)
    assert result.error == dns.rcode.BADTIME and result.key == KEY
    now = int(time.time())
    wire = error_response(result, now=now)
    response = dns.message.from_wire(wire, keyring=False)
    rdata = response.tsig[0]
    assert response.rcode() == dns.rcode.NOTAUTH and rdata.error == dns.rcode.BADTIME
    assert rdata.time_signed == asked_at
    high, low = struct.unpack("!HI", rdata.other)
    assert (high << 32) | low == now
    # the client checks the MAC with its request's MAC (dnspython raises PeerBadTime once the
    # MAC is known good: it reads the error only after the digest)
    with pytest.raises(dns.tsig.PeerBadTime):
        dns.message.from_wire(wire, keyring=KEYRING, request_mac=result.rdata.mac)


def test_signer_signs_a_transfer_that_dnspython_verifies_message_by_message():
    request = verify(signed_query(), KEYRING)
    signer = Signer.for_request(request)
    assert Signer.for_request(verify(dns.message.make_query("a.", "A").to_wire(), KEYRING)) is None
    wires = []
    for i in range(3):
        renderer = dns.renderer.Renderer(request.message.id, 0x8400, 65535)
        if i == 0:
            renderer.add_question(dns.name.from_text("example.com."), dns.rdatatype.AXFR)
        renderer.reserve(signer.size)
        renderer.add_rrset(dns.renderer.ANSWER, dns.rrset.from_text(f"n{i}.example.com.", 300, "IN", "A", "10.0.0.1"))
        signer.sign(renderer)
        wires.append(renderer.get_wire())
    ctx, mac = None, request.rdata.mac
    for wire in wires:
        message = dns.message.from_wire(wire, keyring=KEYRING, request_mac=mac, xfr=True, tsig_ctx=ctx, multi=True)
        ctx, mac = message.tsig_ctx, message.mac
        assert message.had_tsig
