"""Session with one StarCard application over any transport.

Invariants:

* Callers get typed values (``bytes`` of the lengths the profile fixes, :class:`Lifecycle`)
  or exceptions from :mod:`card_profiles.errors`; they never see a status word.
* Every response is checked against the profile before it is returned; a card answering
  9000 with the wrong shape raises :class:`~card_profiles.errors.MalformedResponse`.
* ``apdu_count`` counts the APDUs that went to the transport (a tap is 3: SELECT,
  READ CREDENTIAL, INTERNAL AUTHENTICATE).

Refusals raise StatusWordError subclasses, e.g. ConditionsNotSatisfied (wrong lifecycle),
NotFound (no application / no credential), DataNotFound (no key), FunctionNotSupported
(terminated card), NotEnoughMemory (credential too large). Transport failures raise
CardIOError, CardRemoved or CardTimeout.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from card_profiles.apdu import EXTENDED_MAX_NE, ApduConnection, CommandApdu
from card_profiles.errors import MalformedResponse
from card_profiles.profiles import STARCARD_V1, Lifecycle, Profile
from card_profiles.transport import Transport


class StarCardSession:
    """The StarCard commands of ``profile`` over ``transport``.

    The session does not own the transport: closing it is the caller's job. Raises
    ValueError for a profile whose key algorithm is not ES256 (the only one checked here).
    """

    def __init__(self, transport: Transport, profile: Profile = STARCARD_V1) -> None:
        if profile.key_algorithm != "ES256":
            raise ValueError(f"unsupported key algorithm {profile.key_algorithm!r}")
        self._profile = profile
        self._conn = ApduConnection(transport, extended_length=profile.extended_length)

    @property
    def profile(self) -> Profile:
        return self._profile

    @property
    def apdu_count(self) -> int:
        """APDUs actually sent so far (GET RESPONSE, resends and chain parts included)."""
        return self._conn.apdu_count

    def select(self) -> None:
        """SELECT the application by AID. Raises NotFound, FunctionNotSupported (terminated)."""
        p = self._profile
        self._conn.send(CommandApdu(p.cla_iso, p.ins_select, 0x04, 0x00, p.aid, le=0))

    def serial(self) -> bytes:
        """The card serial number (``profile.serial_length`` bytes)."""
        return self._get_data(self._profile.tag_serial, self._profile.serial_length)

    def lifecycle(self) -> Lifecycle:
        """The lifecycle state. Raises MalformedResponse for an unknown code."""
        (code,) = self._get_data(self._profile.tag_lifecycle, 1)
        try:
            return self._profile.lifecycle_from_code(code)
        except ValueError as exc:
            raise MalformedResponse(str(exc)) from exc

    def public_key(self) -> bytes:
        """The card key as an uncompressed SEC1 point. Raises DataNotFound if there is none."""
        point = self._get_data(self._profile.tag_public_key, self._profile.public_key_length)
        return _check_point(point)

    def generate_key(self) -> bytes:
        """Generate a new card key (clears the credential); return its public point.

        Raises ConditionsNotSatisfied outside PERSONALIZATION.
        """
        p = self._profile
        point = self._conn.send(CommandApdu(p.cla_proprietary, p.ins_generate_key, 0, 0, le=0))
        return _check_point(_check_length(point, p.public_key_length, "public key"))

    def write_credential(self, data: bytes) -> None:
        """Store ``data`` as the credential (atomically replacing the old one).

        Raises ValueError for empty data or data above ``profile.max_credential_size``
        (without sending anything); ConditionsNotSatisfied outside PERSONALIZATION.
        """
        p = self._profile
        if not data:
            raise ValueError("credential must not be empty")
        if len(data) > p.max_credential_size:
            raise ValueError(f"credential of {len(data)} bytes exceeds {p.max_credential_size}")
        self._conn.send(CommandApdu(p.cla_proprietary, p.ins_put_credential, 0, 0, bytes(data)))

    def read_credential(self) -> bytes:
        """The stored credential. Raises NotFound if none, ConditionsNotSatisfied if terminated."""
        p = self._profile
        command = CommandApdu(p.cla_proprietary, p.ins_read_credential, 0, 0, le=EXTENDED_MAX_NE)
        data = self._conn.send(command)
        if not data or len(data) > p.max_credential_size:
            raise MalformedResponse(f"credential of {len(data)} bytes")
        return data

    def internal_authenticate(self, challenge: bytes) -> bytes:
        """Sign ``challenge`` with the card key; return the raw ``r ‖ s`` signature.

        Raises ValueError if the challenge length is not ``profile.challenge_length``;
        DataNotFound if the card has no key; ConditionsNotSatisfied when LOCKED/TERMINATED.
        """
        p = self._profile
        if len(challenge) != p.challenge_length:
            raise ValueError(f"challenge must be {p.challenge_length} bytes")
        command = CommandApdu(p.cla_iso, p.ins_internal_authenticate, 0, 0, bytes(challenge), le=0)
        signature = self._conn.send(command)
        return _check_length(signature, p.signature_length, "signature")

    def set_lifecycle(self, target: Lifecycle) -> None:
        """Move the card to ``target``. Raises ConditionsNotSatisfied if not allowed now."""
        p = self._profile
        code = p.lifecycle_code(target)
        self._conn.send(CommandApdu(p.cla_proprietary, p.ins_set_lifecycle, code, 0))

    def secure(self) -> None:
        """PERSONALIZATION → SECURED. Raises ConditionsNotSatisfied without key and credential."""
        self.set_lifecycle(Lifecycle.SECURED)

    def _get_data(self, tag: int, length: int) -> bytes:
        p = self._profile
        command = CommandApdu(p.cla_proprietary, p.ins_get_data, tag >> 8, tag & 0xFF, le=0)
        return _check_length(self._conn.send(command), length, f"GET DATA {tag:04X}")


def _check_length(data: bytes, length: int, what: str) -> bytes:
    if len(data) != length:
        raise MalformedResponse(f"{what}: expected {length} bytes, got {len(data)}")
    return data


def _check_point(point: bytes) -> bytes:
    """Require an uncompressed SEC1 point that lies on P-256 (the ES256 curve)."""
    if not point or point[0] != 0x04:
        raise MalformedResponse("public key is not an uncompressed SEC1 point")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError as exc:
        raise MalformedResponse("public key is not a valid P-256 point") from exc
    return point
