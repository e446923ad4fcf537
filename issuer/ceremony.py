"""``starcard-hsm``: the key ceremony, with trust-list signing wired to the verifier's format.

``hsm_sim.ceremony`` holds the ceremony steps and may not import ``verifier``; this module is
the composition root that hands it :func:`issue_listed_keys`.
"""

from __future__ import annotations

from collections.abc import Sequence

from hsm_sim import Signer
from hsm_sim.ceremony import ListedKey, build_app
from verifier.core.keys import kid_for
from verifier.core.trust_list import TrustListEntry, issue_trust_list


def issue_listed_keys(
    keys: Sequence[ListedKey],
    *,
    issuer: str,
    sequence: int,
    iat: int,
    exp: int,
    root_signer: Signer,
) -> bytes:
    """Signs the ceremony's key register as a trust list with the root key."""
    entries = [
        TrustListEntry.for_key(k.public_key, k.purpose, k.sign_from, k.sign_until, k.verify_until)
        for k in keys
    ]
    return issue_trust_list(
        entries,
        issuer=issuer,
        sequence=sequence,
        iat=iat,
        exp=exp,
        root_signer=root_signer,
        root_kid=kid_for(root_signer.public_key()),
    )


app = build_app(issue_listed_keys)
