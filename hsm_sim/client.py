"""``RemoteHsm``: the :class:`~hsm_sim.port.Hsm` port on an :mod:`hsm_sim.server` process.

One persistent connection, serialized by a lock (an instance may be shared between
threads). Every call is bounded by ``timeout_s`` (:class:`HsmTimeout`; the outcome of the
call is then unknown and the connection is dropped). A server that cannot be reached raises
:class:`HsmUnavailable`.

Reconnection: a call on a connection that the server has closed (it restarted, or closed an
idle connection) is sent again once on a new connection, but only when the old connection
failed while *sending*, i.e. the server never received the request. A failure after the
request was sent is never retried (the operation may have happened).

Errors raised by the server's HSM come back as the same :mod:`hsm_sim.errors` classes.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ec

from card_profiles.scp import SessionKeys
from hsm_sim.audit import AuditEvent, event_from_json
from hsm_sim.errors import HsmTimeout, HsmUnavailable
from hsm_sim.port import Hsm
from hsm_sim.purpose import KeyPurpose
from hsm_sim.signer import BoundSigner, Signer
from hsm_sim.wire import (
    ProtocolError,
    decode_public_key,
    encode_frame,
    error_from_wire,
    read_frame,
)

__all__ = ["DEFAULT_TIMEOUT_S", "RemoteHsm"]

DEFAULT_TIMEOUT_S = 10.0
_SIGNATURE_LENGTH = 64


class RemoteHsm:
    """Client of the HSM server listening on ``socket_path``. Connects lazily."""

    def __init__(self, socket_path: Path | str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        self._path = str(socket_path)
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    # -- transport ---------------------------------------------------------------------------

    def _call(self, op: str, **args: Any) -> Any:
        request = encode_frame({"op": op, "args": args})
        deadline = time.monotonic() + self._timeout_s
        with self._lock:
            response = self._exchange(op, request, deadline)
        if not isinstance(response, dict) or not isinstance(response.get("ok"), bool):
            raise HsmUnavailable(f"HSM server sent a malformed response to {op}")
        if not response["ok"]:
            raise error_from_wire(response.get("error"), response.get("message"))
        return response.get("result")

    def _exchange(self, op: str, request: bytes, deadline: float) -> Any:
        """Send ``request`` and read the response; the caller holds the lock."""
        for _ in range(2):
            fresh = self._sock is None
            sock = self._connect(deadline) if self._sock is None else self._sock
            self._sock = sock
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.sendall(request)
            except TimeoutError:
                self._drop()
                raise HsmTimeout(f"HSM server at {self._path}: {op} timed out") from None
            except OSError as exc:
                self._drop()
                if fresh:
                    raise HsmUnavailable(
                        f"HSM server at {self._path}: connection failed ({exc})"
                    ) from None
                continue  # the server closed this connection before our request: resend
            try:
                response = read_frame(sock, deadline)
            except TimeoutError:
                self._drop()
                raise HsmTimeout(
                    f"HSM server at {self._path}: no answer to {op} within {self._timeout_s:g} s"
                ) from None
            except (OSError, ProtocolError) as exc:
                self._drop()
                raise HsmUnavailable(
                    f"HSM server at {self._path}: {op} failed ({exc}); outcome unknown"
                ) from None
            if response is None:
                self._drop()
                raise HsmUnavailable(
                    f"HSM server at {self._path} closed the connection during {op}; outcome unknown"
                )
            return response
        raise HsmUnavailable(f"HSM server at {self._path}: cannot send {op}")

    def _connect(self, deadline: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.connect(self._path)
        except TimeoutError:
            sock.close()
            raise HsmTimeout(f"HSM server at {self._path}: connect timed out") from None
        except OSError as exc:
            sock.close()
            raise HsmUnavailable(
                f"HSM server at {self._path} is not reachable ({exc.strerror or exc}); "
                f"start it with python -m hsm_sim.server"
            ) from None
        return sock

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        """Close the connection (the next call would open a new one)."""
        with self._lock:
            self._drop()

    # -- the port --------------------------------------------------------------------------

    def create_key(self, label: str, purpose: KeyPurpose) -> ec.EllipticCurvePublicKey:
        return decode_public_key(self._call("create_key", label=label, purpose=purpose.value))

    def create_master_key(self, label: str, *, factory_export: bool = False) -> None:
        self._call("create_master_key", label=label, factory_export=bool(factory_export))

    def has_key(self, label: str) -> bool:
        return _bool(self._call("has_key", label=label))

    def labels(self) -> list[str]:
        result = self._call("labels")
        if not isinstance(result, list) or not all(isinstance(x, str) for x in result):
            raise HsmUnavailable("HSM server sent malformed labels")
        return list(result)

    def purpose_of(self, label: str) -> KeyPurpose:
        return KeyPurpose(self._call("purpose_of", label=label))

    def is_retired(self, label: str) -> bool:
        return _bool(self._call("is_retired", label=label))

    def public_key(self, label: str) -> ec.EllipticCurvePublicKey:
        return decode_public_key(self._call("public_key", label=label))

    def signer(self, label: str, purpose: KeyPurpose) -> Signer:
        public_key = decode_public_key(self._call("signer", label=label, purpose=purpose.value))
        return BoundSigner(self._sign, label, purpose, public_key, "hsm_sim server")

    def _sign(self, label: str, purpose: KeyPurpose, data: bytes) -> bytes:
        if not isinstance(data, bytes):
            raise TypeError("data to sign must be bytes")
        signature = _bytes(self._call("sign", label=label, purpose=purpose.value, data=data.hex()))
        if len(signature) != _SIGNATURE_LENGTH:
            raise HsmUnavailable("HSM server sent a signature of the wrong length")
        return signature

    def retire_key(self, label: str) -> None:
        self._call("retire_key", label=label)

    def scp_session(
        self,
        label: str,
        serial: bytes,
        host_challenge: bytes,
        card_challenge: bytes,
        card_cryptogram: bytes,
    ) -> SessionKeys:
        result = self._call(
            "scp_session",
            label=label,
            serial=serial.hex(),
            host_challenge=host_challenge.hex(),
            card_challenge=card_challenge.hex(),
            card_cryptogram=card_cryptogram.hex(),
        )
        if not isinstance(result, dict):
            raise HsmUnavailable("HSM server sent a malformed session")
        return SessionKeys(_bytes(result.get("host_cryptogram")), _bytes(result.get("s_mac")))

    def factory_card_key(self, label: str, serial: bytes) -> bytes:
        return _bytes(self._call("factory_card_key", label=label, serial=serial.hex()))

    def audit_log(self) -> list[AuditEvent]:
        result = self._call("audit_log", since=0)
        if not isinstance(result, list):
            raise HsmUnavailable("HSM server sent a malformed audit log")
        try:
            return [event_from_json(e) for e in result]
        except ValueError as exc:
            raise HsmUnavailable(f"HSM server sent a malformed audit event ({exc})") from None


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise HsmUnavailable("HSM server sent a non-boolean answer")
    return value


def _bytes(value: object) -> bytes:
    try:
        return bytes.fromhex(str(value))
    except ValueError:
        raise HsmUnavailable("HSM server sent malformed hex") from None


if TYPE_CHECKING:

    def _satisfies_port(hsm: RemoteHsm) -> Hsm:
        return hsm  # mypy checks that RemoteHsm implements the Hsm port
