"""The HSM simulator as its own process, on a Unix-domain socket.

Run: ``python -m hsm_sim.server --socket PATH --keys FILE --passphrase-env VAR``. The
process holds the keys (an encrypted :class:`~hsm_sim.sim.HsmSim` key file); clients
(:class:`hsm_sim.client.RemoteHsm`) get public keys, signatures, secure-channel session keys
and the audit log, never a private key. Protocol: :mod:`hsm_sim.wire`.

Invariants:

* The socket lives in a directory that is only accessible to its owner (created ``0700`` if
  missing, refused if group or others can enter it) and is itself ``0600``; a connecting
  process must run as the server's user (``SO_PEERCRED``), or as root.
* Every request names the key's purpose where the operation uses one; the simulator refuses
  a key of another purpose, exactly as in-process. Every operation is audited in the
  server's :class:`~hsm_sim.sim.HsmSim`.
* A running server's socket is never taken over: start refuses while another server
  answers on the path; a stale socket file (no one answers) is replaced.
* SIGTERM and SIGINT stop the server and remove its socket file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import socketserver
import stat
import struct
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from hsm_sim.audit import event_to_json
from hsm_sim.errors import HsmConfigError, HsmError
from hsm_sim.port import Hsm
from hsm_sim.purpose import KeyPurpose
from hsm_sim.signer import Signer
from hsm_sim.sim import HsmSim
from hsm_sim.wire import WIRE_ERRORS, encode_frame, encode_public_key, read_frame

__all__ = ["IDLE_TIMEOUT_S", "HsmServer", "main"]

IDLE_TIMEOUT_S = 300.0
"""A connection idle for this long is closed (its thread ends)."""

_PEERCRED = struct.Struct("3i")


class HsmServer:
    """Serves ``hsm`` on ``socket_path`` (see the module docstring).

    Raises :class:`HsmConfigError` if the socket directory is accessible by others or
    another server already answers on ``socket_path``.
    """

    def __init__(self, hsm: Hsm, socket_path: Path) -> None:
        self._hsm = hsm
        self._path = socket_path
        self._signers: dict[tuple[str, KeyPurpose], Signer] = {}
        self._signers_lock = threading.Lock()
        _prepare_directory(socket_path.parent)
        _remove_stale_socket(socket_path)
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                server._serve_connection(self.request)

        old_umask = os.umask(0o177)
        try:
            self._server = socketserver.ThreadingUnixStreamServer(str(socket_path), Handler)
        finally:
            os.umask(old_umask)
        os.chmod(socket_path, 0o600)
        self._server.daemon_threads = True

    @property
    def socket_path(self) -> Path:
        return self._path

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (from another thread or a signal handler thread)."""
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._server.server_close()
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()

    def shutdown(self) -> None:
        self._server.shutdown()

    # -- one connection ---------------------------------------------------------------------

    def _serve_connection(self, sock: socket.socket) -> None:
        if not _peer_allowed(sock):
            return
        while True:
            sock.settimeout(IDLE_TIMEOUT_S)
            try:
                request = read_frame(sock)
            except (OSError, HsmError):
                return
            if request is None:
                return
            response = self._dispatch(request)
            try:
                sock.sendall(encode_frame(response))
            except (OSError, HsmError):
                return

    def _dispatch(self, request: object) -> dict[str, Any]:
        try:
            if not isinstance(request, dict) or not isinstance(request.get("args"), dict):
                raise ValueError("a request is {'op': name, 'args': {...}}")
            op = _OPS.get(str(request.get("op")))
            if op is None:
                raise ValueError(f"unknown operation {request.get('op')!r}")
            return {"ok": True, "result": op(self, request["args"])}
        except Exception as exc:  # every failure becomes an error response
            name = type(exc).__name__
            if name not in WIRE_ERRORS and not isinstance(exc, HsmError):
                return {"ok": False, "error": "HsmError", "message": "internal error"}
            return {"ok": False, "error": name, "message": str(exc)}

    # -- operations ------------------------------------------------------------------------

    def _signer(self, label: str, purpose: KeyPurpose) -> Signer:
        with self._signers_lock:
            found = self._signers.get((label, purpose))
        if found is None:
            found = self._hsm.signer(label, purpose)
            with self._signers_lock:
                self._signers[(label, purpose)] = found
        return found

    def _op_create_key(self, args: dict[str, Any]) -> object:
        return encode_public_key(self._hsm.create_key(_text(args, "label"), _purpose(args)))

    def _op_create_master_key(self, args: dict[str, Any]) -> object:
        flag = args.get("factory_export", False)
        if not isinstance(flag, bool):
            raise TypeError("factory_export must be a boolean")
        self._hsm.create_master_key(_text(args, "label"), factory_export=flag)
        return None

    def _op_has_key(self, args: dict[str, Any]) -> object:
        return self._hsm.has_key(_text(args, "label"))

    def _op_labels(self, args: dict[str, Any]) -> object:
        return self._hsm.labels()

    def _op_purpose_of(self, args: dict[str, Any]) -> object:
        return self._hsm.purpose_of(_text(args, "label")).value

    def _op_is_retired(self, args: dict[str, Any]) -> object:
        return self._hsm.is_retired(_text(args, "label"))

    def _op_public_key(self, args: dict[str, Any]) -> object:
        return encode_public_key(self._hsm.public_key(_text(args, "label")))

    def _op_signer(self, args: dict[str, Any]) -> object:
        label, purpose = _text(args, "label"), _purpose(args)
        signer = self._hsm.signer(label, purpose)  # audited hand-out, refusals included
        with self._signers_lock:
            self._signers[(label, purpose)] = signer
        return encode_public_key(signer.public_key())

    def _op_sign(self, args: dict[str, Any]) -> object:
        signer = self._signer(_text(args, "label"), _purpose(args))
        return signer.sign(_hex(args, "data")).hex()

    def _op_retire_key(self, args: dict[str, Any]) -> object:
        self._hsm.retire_key(_text(args, "label"))
        return None

    def _op_scp_session(self, args: dict[str, Any]) -> object:
        keys = self._hsm.scp_session(
            _text(args, "label"),
            _hex(args, "serial"),
            _hex(args, "host_challenge"),
            _hex(args, "card_challenge"),
            _hex(args, "card_cryptogram"),
        )
        return {"host_cryptogram": keys.host_cryptogram.hex(), "s_mac": keys.s_mac.hex()}

    def _op_factory_card_key(self, args: dict[str, Any]) -> object:
        return self._hsm.factory_card_key(_text(args, "label"), _hex(args, "serial")).hex()

    def _op_audit_log(self, args: dict[str, Any]) -> object:
        since = args.get("since", 0)
        if type(since) is not int or since < 0:
            raise ValueError("since must be a non-negative integer")
        return [event_to_json(e) for e in self._hsm.audit_log()[since:]]


_OPS: dict[str, Callable[[HsmServer, dict[str, Any]], object]] = {
    name.removeprefix("_op_"): fn
    for name, fn in vars(HsmServer).items()
    if name.startswith("_op_") and callable(fn)
}


def _text(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string")
    return value


def _hex(args: dict[str, Any], name: str) -> bytes:
    return bytes.fromhex(_text(args, name))


def _purpose(args: dict[str, Any]) -> KeyPurpose:
    return KeyPurpose(_text(args, "purpose"))


def _prepare_directory(directory: Path) -> None:
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
    info = directory.stat()
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) or info.st_uid != os.getuid():
        raise HsmConfigError(
            f"socket directory {directory} must be owned by this user and not accessible "
            f"by group or others (chmod 700)"
        )


def _remove_stale_socket(path: Path) -> None:
    if not path.exists() and not path.is_symlink():
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise HsmConfigError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody answers: a stale file left by a killed server
        return
    finally:
        probe.close()
    raise HsmConfigError(f"another HSM server is already listening on {path}")


def _peer_allowed(sock: socket.socket) -> bool:
    """Only the server's own user (or root) may talk to it."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except OSError:
        return False
    _pid, uid, _gid = _PEERCRED.unpack(raw)
    return uid in (os.getuid(), 0)


def main(argv: list[str] | None = None) -> int:
    """``python -m hsm_sim.server --socket PATH --keys FILE --passphrase-env VAR``."""
    parser = argparse.ArgumentParser(
        prog="python -m hsm_sim.server", description="StarCard HSM simulator process"
    )
    parser.add_argument("--socket", required=True, type=Path, help="Unix socket path")
    parser.add_argument("--keys", required=True, type=Path, help="encrypted key file")
    parser.add_argument(
        "--passphrase-env",
        required=True,
        metavar="VAR",
        help="environment variable holding the key-file passphrase",
    )
    args = parser.parse_args(argv)
    passphrase = os.environ.get(args.passphrase_env, "")
    if not passphrase:
        print(f"hsm_sim.server: ${args.passphrase_env} is not set or empty", file=sys.stderr)
        return 2
    try:
        hsm = HsmSim(args.keys, passphrase.encode("utf-8"))
        server = HsmServer(hsm, args.socket)
    except HsmError as exc:
        print(f"hsm_sim.server: {exc}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"hsm_sim.server: listening on {args.socket}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
