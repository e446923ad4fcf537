"""The simulator as its own process: socket permissions, peer refusals, dead server,
timeouts, reconnection across a restart, and purpose checks on raw requests."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hsm_sim import HsmConfigError, HsmSim, HsmTimeout, HsmUnavailable, KeyPurpose
from hsm_sim.client import RemoteHsm
from hsm_sim.server import HsmServer
from tests.hsm.checks import raw_request
from tests.hsm.conftest import PASSPHRASE_ENV, ServerProcess
from tests.pcsc_harness import REPO_ROOT

CRED = KeyPurpose.CREDENTIAL_SIGNING


def test_socket_is_private_to_its_owner(hsm_server: ServerProcess) -> None:
    mode = hsm_server.socket_path.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(hsm_server.socket_path.parent.stat().st_mode) == 0o700


def test_server_refuses_a_directory_others_can_enter(short_dir: Path) -> None:
    shared = short_dir / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    with pytest.raises(HsmConfigError, match="chmod 700"):
        HsmServer(HsmSim(), shared / "hsm.sock")


def test_second_server_on_the_same_socket_is_refused(hsm_server: ServerProcess) -> None:
    env = {**os.environ, PASSPHRASE_ENV: "whatever"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hsm_sim.server",
            "--socket",
            str(hsm_server.socket_path),
            "--keys",
            str(hsm_server.keys_path.with_name("other.json")),
            "--passphrase-env",
            PASSPHRASE_ENV,
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert b"already listening" in result.stderr
    assert hsm_server.answers()


def test_server_without_passphrase_does_not_start(short_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != PASSPHRASE_ENV}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hsm_sim.server",
            "--socket",
            str(short_dir / "s"),
            "--keys",
            str(short_dir / "k.json"),
            "--passphrase-env",
            PASSPHRASE_ENV,
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert PASSPHRASE_ENV.encode() in result.stderr


def test_dead_server_is_unavailable_not_a_hang(short_dir: Path) -> None:
    client = RemoteHsm(short_dir / "nobody.sock", timeout_s=2)
    started = time.monotonic()
    with pytest.raises(HsmUnavailable, match="not reachable"):
        client.labels()
    assert time.monotonic() - started < 2


def test_silent_server_times_out(short_dir: Path) -> None:
    path = short_dir / "silent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    accepted: list[socket.socket] = []
    acceptor = threading.Thread(target=lambda: accepted.append(listener.accept()[0]))
    acceptor.start()
    try:
        client = RemoteHsm(path, timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(HsmTimeout):
            client.has_key("x")
        assert time.monotonic() - started < 2
    finally:
        acceptor.join(timeout=5)
        for conn in accepted:
            conn.close()
        listener.close()


def test_client_survives_a_server_restart(hsm_server: ServerProcess) -> None:
    client = RemoteHsm(hsm_server.socket_path, timeout_s=10)
    public_key = client.create_key("cred", CRED)
    signer = client.signer("cred", CRED)
    assert len(signer.sign(b"before")) == 64
    hsm_server.restart()
    assert client.public_key("cred").public_numbers() == public_key.public_numbers()
    assert len(signer.sign(b"after")) == 64
    client.close()


def test_server_crash_mid_session_is_unavailable(hsm_server: ServerProcess) -> None:
    client = RemoteHsm(hsm_server.socket_path, timeout_s=5)
    client.create_key("cred", CRED)
    hsm_server.stop()
    with pytest.raises(HsmUnavailable):
        client.has_key("cred")


def test_raw_requests_are_checked_against_the_key_purpose(hsm_server: ServerProcess) -> None:
    client = RemoteHsm(hsm_server.socket_path, timeout_s=10)
    client.create_key("cred", CRED)
    wrong = raw_request(
        hsm_server.socket_path,
        {"op": "sign", "args": {"label": "cred", "purpose": "trust_list_root", "data": "00"}},
    )
    assert (wrong["ok"], wrong["error"]) == (False, "WrongKeyPurpose")
    missing = raw_request(hsm_server.socket_path, {"op": "sign", "args": {"label": "cred"}})
    assert (missing["ok"], missing["error"]) == (False, "TypeError")
    malformed = raw_request(hsm_server.socket_path, ["not", "a", "request"])
    assert (malformed["ok"], malformed["error"]) == (False, "ValueError")
    right = raw_request(
        hsm_server.socket_path,
        {"op": "sign", "args": {"label": "cred", "purpose": CRED.value, "data": "00"}},
    )
    assert right["ok"] is True and len(bytes.fromhex(right["result"])) == 64
    refused = [e for e in client.audit_log() if not e.ok]
    # the server gets a signer for the (label, purpose) of the request first: refused there
    assert [(e.op.value, e.detail) for e in refused] == [("signer", "WrongKeyPurpose")]
    client.close()


def test_oversized_frame_closes_the_connection(hsm_server: ServerProcess) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect(str(hsm_server.socket_path))
        sock.sendall((1 << 30).to_bytes(4, "big"))
        assert sock.recv(16) == b""
    finally:
        sock.close()
    assert hsm_server.answers()
