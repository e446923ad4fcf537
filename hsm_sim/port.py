"""The ``Hsm`` port: everything the issuer and the key ceremony need from an HSM.

Three backends implement it and pass one shared test suite (``tests/hsm``):

* :class:`hsm_sim.HsmSim`: the in-process simulator (embedded default);
* :class:`hsm_sim.client.RemoteHsm`: the same simulator in its own process
  (:mod:`hsm_sim.server`), reached over a Unix-domain socket;
* :class:`hsm_sim.pkcs11_backend.Pkcs11Hsm`: any PKCS#11 token (SoftHSM2 in tests, a real
  HSM by changing the module path).

Invariants every backend keeps:

* No method returns private key material, with one deliberate, audited exception:
  ``factory_card_key`` on a master key created with ``factory_export=True``.
* A key's purpose is fixed at creation and enforced on every use (:class:`WrongKeyPurpose`);
  labels are never reused (:class:`KeyExists`).
* ``retire_key`` is final: a retired key signs and diversifies nothing
  (:class:`KeyRetired`), its public key stays readable, and the retirement survives a
  restart.
* Every operation, refusals included, is appended to ``audit_log()``; events never hold key
  material.
* Errors are the :mod:`hsm_sim.errors` types; a backend never leaks its library's exceptions.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from card_profiles.scp import SessionKeys
from hsm_sim.audit import AuditEvent
from hsm_sim.purpose import KeyPurpose
from hsm_sim.signer import Signer

__all__ = ["Hsm"]


@runtime_checkable
class Hsm(Protocol):
    """An HSM holding P-256 signing keys and AES-256 card master keys by label."""

    def create_key(self, label: str, purpose: KeyPurpose) -> EllipticCurvePublicKey:
        """Generate a P-256 key for a signing ``purpose``; return its public key.

        Raises :class:`KeyExists`, :class:`WrongKeyPurpose` (diversification purpose),
        ValueError for a bad label.
        """
        ...

    def create_master_key(self, label: str, *, factory_export: bool = False) -> None:
        """Generate an AES-256 card master key (purpose ``CARD_KEY_DIVERSIFICATION``)."""
        ...

    def has_key(self, label: str) -> bool:
        """Whether a key with ``label`` exists (retired keys included)."""
        ...

    def labels(self) -> list[str]:
        """All key labels, in creation order (retired keys included)."""
        ...

    def purpose_of(self, label: str) -> KeyPurpose:
        """The purpose of key ``label``; raises :class:`KeyNotFound`."""
        ...

    def is_retired(self, label: str) -> bool:
        """Whether key ``label`` was retired; raises :class:`KeyNotFound`."""
        ...

    def public_key(self, label: str) -> EllipticCurvePublicKey:
        """The public key of ``label`` (also of a retired key); raises :class:`KeyNotFound`,
        :class:`WrongKeyPurpose` for a master key."""
        ...

    def signer(self, label: str, purpose: KeyPurpose) -> Signer:
        """A :class:`Signer` for key ``label`` checked against ``purpose``.

        Raises :class:`KeyNotFound`, :class:`WrongKeyPurpose`, :class:`KeyRetired`.
        """
        ...

    def retire_key(self, label: str) -> None:
        """Retire key ``label`` for good. Raises :class:`KeyNotFound`, :class:`KeyRetired`
        if it already was."""
        ...

    def scp_session(
        self,
        label: str,
        serial: bytes,
        host_challenge: bytes,
        card_challenge: bytes,
        card_cryptogram: bytes,
    ) -> SessionKeys:
        """Host side of a card's secure-channel handshake with master key ``label``; K_card
        never leaves the HSM. Raises :class:`CardCryptogramMismatch`."""
        ...

    def factory_card_key(self, label: str, serial: bytes) -> bytes:
        """FACTORY operation: K_card of ``serial`` from an exportable master key, else
        :class:`ExportNotAllowed`."""
        ...

    def audit_log(self) -> list[AuditEvent]:
        """The audit log, oldest first."""
        ...

    def close(self) -> None:
        """Release sessions, sockets and threads; the object is unusable afterwards."""
        ...
