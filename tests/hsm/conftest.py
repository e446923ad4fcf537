"""The three HSM backends behind one fixture, for the shared suite in ``test_backends.py``.

* ``sim``: :class:`hsm_sim.HsmSim` in-process, persisting to an encrypted key file;
* ``remote``: :class:`hsm_sim.client.RemoteHsm` against ``python -m hsm_sim.server`` started
  as a separate process by the fixture (stopped by PID at teardown);
* ``pkcs11``: :class:`hsm_sim.pkcs11_backend.Pkcs11Hsm` on SoftHSM2 with a private token
  directory (``SOFTHSM2_CONF``) initialised by ``softhsm2-util`` for each test.

SoftHSM2 missing: skipped locally, a failure under ``CI=true`` (``skip_or_fail``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hsm_sim import Hsm, HsmSim
from tests.pcsc_harness import REPO_ROOT, skip_or_fail

PASSPHRASE = "test passphrase for the hsm key file"
PASSPHRASE_ENV = "STARCARD_TEST_HSM_PASSPHRASE"
SOFTHSM2_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN_LABEL = "starcard-test"
USER_PIN = "123456"
SO_PIN = "87654321"
SERVER_START_TIMEOUT_S = 20.0
BACKENDS = ("sim", "remote", "pkcs11")


def softhsm_missing() -> str | None:
    """None if SoftHSM2 and python-pkcs11 are usable here; else why not."""
    if shutil.which("softhsm2-util") is None:
        return "softhsm2-util is not installed (apt-get install softhsm2)"
    if not Path(SOFTHSM2_MODULE).is_file():
        return f"SoftHSM2 module {SOFTHSM2_MODULE} is missing (apt-get install softhsm2)"
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return "python-pkcs11 is not installed (pip install python-pkcs11)"
    return None


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A private directory with a short path (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="hsm-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class SoftHsmToken:
    """A freshly initialised SoftHSM2 token in a private directory."""

    directory: Path
    module: str = SOFTHSM2_MODULE
    label: str = TOKEN_LABEL
    pin: str = USER_PIN
    opened: list[Any] = field(default_factory=list)

    def open(self, **kwargs: Any) -> Any:
        from hsm_sim.pkcs11_backend import Pkcs11Hsm

        hsm = Pkcs11Hsm(self.module, self.label, self.pin, **kwargs)
        self.opened.append(hsm)
        return hsm

    def raw_token(self) -> Any:
        """The python-pkcs11 token object (call only under ``pkcs11_backend._TOKEN_LOCK``)."""
        import pkcs11

        return pkcs11.lib(self.module).get_token(token_label=self.label)


@pytest.fixture
def softhsm(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SoftHsmToken]:
    reason = softhsm_missing()
    if reason is not None:
        skip_or_fail(f"SoftHSM2: {reason}")
    import pkcs11

    tokens = short_dir / "tokens"
    tokens.mkdir()
    conf = short_dir / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}/\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            TOKEN_LABEL,
            "--so-pin",
            SO_PIN,
            "--pin",
            USER_PIN,
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    # SoftHSM reads SOFTHSM2_CONF in C_Initialize: re-initialise the (process-wide) module.
    from hsm_sim.pkcs11_backend import _TOKEN_LOCK

    with _TOKEN_LOCK:
        pkcs11.lib(SOFTHSM2_MODULE).reinitialize()
    token = SoftHsmToken(short_dir)
    try:
        yield token
    finally:
        for hsm in token.opened:
            hsm.close()


class ServerProcess:
    """``python -m hsm_sim.server`` as a child process; stopped by its PID."""

    def __init__(self, directory: Path) -> None:
        self.socket_path = directory / "run" / "hsm.sock"
        self.keys_path = directory / "keys.json"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, PASSPHRASE_ENV: PASSPHRASE}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hsm_sim.server",
                "--socket",
                str(self.socket_path),
                "--keys",
                str(self.keys_path),
                "--passphrase-env",
                PASSPHRASE_ENV,
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"hsm server exited with {self.proc.returncode}: {err}")
            if self.answers():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("hsm server did not start listening in time")

    def answers(self) -> bool:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.socket_path))
        except OSError:
            return False
        finally:
            probe.close()
        return True

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def hsm_server(short_dir: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(short_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Backend:
    """One backend under test: the HSM, how to restart it on the same key store, and how
    to check on the store itself that a key cannot be extracted."""

    name: str
    hsm: Hsm
    restart: Callable[[], Hsm]
    assert_not_extractable: Callable[[str], None]


def _sim_backend(directory: Path) -> Backend:
    from tests.hsm.checks import assert_key_file_encrypted

    path = directory / "keys.json"
    holder: list[Hsm] = [HsmSim(path, PASSPHRASE.encode())]

    def restart() -> Hsm:
        holder[0] = HsmSim(path, PASSPHRASE.encode())
        return holder[0]

    return Backend("sim", holder[0], restart, lambda label: assert_key_file_encrypted(path))


def _remote_backend(server: ServerProcess) -> Backend:
    from hsm_sim.client import RemoteHsm
    from tests.hsm.checks import assert_key_file_encrypted, assert_server_refuses_export

    clients: list[RemoteHsm] = [RemoteHsm(server.socket_path, timeout_s=10)]

    def restart() -> Hsm:
        clients[-1].close()
        server.restart()
        clients.append(RemoteHsm(server.socket_path, timeout_s=10))
        return clients[-1]

    def not_extractable(label: str) -> None:
        assert_key_file_encrypted(server.keys_path)
        assert_server_refuses_export(server.socket_path, label)

    return Backend("remote", clients[0], restart, not_extractable)


def _pkcs11_backend(token: SoftHsmToken) -> Backend:
    from tests.hsm.checks import assert_token_key_protected

    first = token.open()

    def restart() -> Hsm:
        token.opened[-1].close()
        return token.open()

    return Backend("pkcs11", first, restart, lambda label: assert_token_key_protected(token, label))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, short_dir: Path) -> Iterator[Backend]:
    if request.param == "sim":
        yield _sim_backend(short_dir)
    elif request.param == "remote":
        server = ServerProcess(short_dir)
        server.start()
        try:
            yield _remote_backend(server)
        finally:
            server.stop()
    else:
        token = request.getfixturevalue("softhsm")
        yield _pkcs11_backend(token)
