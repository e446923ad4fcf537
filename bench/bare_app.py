"""The baseline server of ``verifier_http_rps``: a bare FastAPI endpoint that does the two
ES256 verifications of a tap with ``cryptography`` on fixed data (keys built once) and returns
a constant JSON answer. Served with the verifier's production settings
(:func:`verifier.cli.server_options`), so the ratio measures what StarCard adds around the
cryptography: terminal request signature, JSON parsing, credential parsing, challenge unsealing,
status lookup, nonce and receipt writes."""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI, Response

_KEYS = [ec.generate_private_key(ec.SECP256R1()) for _ in range(2)]
_MESSAGE = secrets.token_bytes(200)
_PAIRS = [(k.public_key(), k.sign(_MESSAGE, ec.ECDSA(hashes.SHA256()))) for k in _KEYS]
_ANSWER = b'{"state":"valid","star_level":4,"assurance":"high"}'

app = FastAPI()


@app.post("/v1/verifications")
def verifications() -> Response:
    for public, signature in _PAIRS:
        public.verify(signature, _MESSAGE, ec.ECDSA(hashes.SHA256()))
    return Response(_ANSWER, media_type="application/json")
