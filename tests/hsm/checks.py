"""Backend-specific checks that a key cannot leave its store (used by the shared suite)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from hsm_sim.wire import encode_frame, read_frame


def assert_key_file_encrypted(path: Path) -> None:
    """Every private key in a simulator key file is encrypted PKCS#8 or AES-GCM-wrapped."""
    doc = json.loads(path.read_text())
    assert doc["keys"], "the key file holds no key"
    for entry in doc["keys"]:
        if "pkcs8_pem" in entry:
            assert entry["pkcs8_pem"].startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        else:
            assert set(entry) >= {"scrypt_salt", "nonce", "ciphertext"}
    assert b"BEGIN PRIVATE KEY" not in path.read_bytes()
    assert b"BEGIN EC PRIVATE KEY" not in path.read_bytes()


def raw_request(socket_path: Path, request: object) -> Any:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    try:
        sock.connect(str(socket_path))
        sock.sendall(encode_frame(request))
        return read_frame(sock)
    finally:
        sock.close()


def assert_server_refuses_export(socket_path: Path, label: str) -> None:
    """The server has no operation that returns a private key."""
    for op in ("private_key", "export", "export_key", "_keys"):
        response = raw_request(socket_path, {"op": op, "args": {"label": label}})
        assert response["ok"] is False
        assert response["error"] == "ValueError"
        assert "unknown operation" in response["message"]


def assert_token_key_protected(token: Any, label: str) -> None:
    """On the token: sensitive, never extractable, CKA_VALUE unreadable."""
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    from hsm_sim.pkcs11_backend import _TOKEN_LOCK

    with _TOKEN_LOCK:
        # The process is already logged in (the backend's session): no PIN here.
        session = token.raw_token().open()
        try:
            found = []
            for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.SECRET_KEY):
                found += list(session.get_objects({Attribute.CLASS: cls, Attribute.LABEL: label}))
            assert len(found) == 1, f"expected one key object labelled {label!r}"
            key = found[0]
            assert key[Attribute.SENSITIVE] is True
            assert key[Attribute.EXTRACTABLE] is False
            assert key[Attribute.ALWAYS_SENSITIVE] is True
            assert key[Attribute.NEVER_EXTRACTABLE] is True
            assert key[Attribute.TOKEN] is True
            try:
                key[Attribute.VALUE]
            except pkcs11.AttributeSensitive:
                pass
            else:
                raise AssertionError("CKA_VALUE of a token key was readable")
        finally:
            session.close()
