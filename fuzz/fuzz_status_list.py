"""atheris target: status list tokens (verifier.core.status_list), past the signature check.

An input starting with ``S`` has the rest signed by the trusted status-list key as the
claims payload before parsing, so the fuzzer reaches the claim and list checks (zlib, bits,
sizes); any other input is parsed as it is. Checked: only VerificationError subclasses are
raised, by the parser and by StatusListCache.accept.
"""

from __future__ import annotations

import contextlib
import hashlib
import zlib

import atheris
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

with atheris.instrument_imports():
    from verifier.core.cbor import encode
    from verifier.core.cose import sign1
    from verifier.core.errors import VerificationError
    from verifier.core.keys import kid_for
    from verifier.core.status_list import STATUS_LIST_TYP, StatusListCache, parse_status_list_token
    from verifier.core.trust import TrustedKey, TrustStore

from _common import main

NOW = 1_767_225_600


class FixedSigner:
    algorithm = "ES256"

    def __init__(self) -> None:
        scalar = int.from_bytes(hashlib.sha256(b"fuzz status key").digest(), "big") >> 8
        self.key = ec.derive_private_key(scalar, ec.SECP256R1())

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.key.public_key()

    def sign(self, data: bytes) -> bytes:
        r, s = utils.decode_dss_signature(self.key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


SIGNER = FixedSigner()
KID = kid_for(SIGNER.public_key())
TRUST = TrustStore([TrustedKey.for_public_key(SIGNER.public_key(), "status_list", 0, 2**40)])


def test_one_input(data: bytes) -> None:
    signed = data[:1] == b"S"  # sign the rest as the claims payload
    token = sign1(data[1:], SIGNER, KID, {16: STATUS_LIST_TYP}) if signed else data
    with contextlib.suppress(VerificationError):
        parse_status_list_token(token, TRUST, NOW)
    with contextlib.suppress(VerificationError):
        StatusListCache().accept(token, TRUST, NOW)


def seeds() -> list[bytes]:
    claims = {
        2: "https://sc.example.cn/status/1",
        6: NOW - 60,
        4: NOW + 3600,
        65534: 300,
        65533: {"bits": 2, "lst": zlib.compress(bytes(64))},
    }
    payload = encode(claims)
    return [b"S" + payload, sign1(payload, SIGNER, KID, {16: STATUS_LIST_TYP})]


if __name__ == "__main__":
    main(test_one_input, seeds)
