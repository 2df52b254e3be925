#!/usr/bin/env python3
"""Write the JWKS the MCP peers verify RS256 bench tokens with (issue 32).

Usage: bench/peers/jwks.py [PUBLIC_KEY_PEM [OUT [KID]]]
Defaults: certs/dev/jwt-rsa.pub (TEST-ONLY key), stdout, kid "bench".

agentgateway (and most JWKS consumers) pick the key by the token header's `kid`, so the
tokens the load generator sends must carry kid "bench" too. Python stdlib only: the SPKI
DER is small enough to walk by hand, and no bench machine then needs `cryptography`.
"""
import base64
import json
import pathlib
import sys


def der_read(buf, pos):
    """One DER TLV at pos: (tag, value start, value end)."""
    tag = buf[pos]
    length = buf[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(buf[pos:pos + n], "big")
        pos += n
    return tag, pos, pos + length


def rsa_numbers(pem):
    body = "".join(l for l in pem.splitlines() if l and not l.startswith("-----"))
    der = base64.b64decode(body)
    tag, start, _ = der_read(der, 0)  # SubjectPublicKeyInfo SEQUENCE
    assert tag == 0x30, "not a SubjectPublicKeyInfo"
    tag, _, alg_end = der_read(der, start)  # AlgorithmIdentifier
    assert tag == 0x30
    assert bytes.fromhex("2a864886f70d010101") in der[start:alg_end], "not an RSA key"
    tag, bits, _ = der_read(der, alg_end)  # BIT STRING, first byte = unused bits
    assert tag == 0x03
    tag, seq, _ = der_read(der, bits + 1)  # RSAPublicKey SEQUENCE
    assert tag == 0x30
    tag, ns, ne = der_read(der, seq)
    assert tag == 0x02
    tag, es, ee = der_read(der, ne)
    assert tag == 0x02
    return int.from_bytes(der[ns:ne], "big"), int.from_bytes(der[es:ee], "big")


def b64u(n):
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def main():
    root = pathlib.Path(__file__).resolve().parents[2]
    pub = sys.argv[1] if len(sys.argv) > 1 else str(root / "certs/dev/jwt-rsa.pub")
    out = sys.argv[2] if len(sys.argv) > 2 else "-"
    kid = sys.argv[3] if len(sys.argv) > 3 else "bench"
    n, e = rsa_numbers(pathlib.Path(pub).read_text())
    jwks = {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": b64u(n), "e": b64u(e)}]}
    text = json.dumps(jwks, indent=2) + "\n"
    if out == "-":
        sys.stdout.write(text)
    else:
        pathlib.Path(out).write_text(text)


if __name__ == "__main__":
    main()
