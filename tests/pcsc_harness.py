"""Run a real PC/SC stack for end-to-end tests: a private pcscd with the vpcd driver, and
virtual StarCards plugged into it as separate processes.

* :class:`PcscStack` starts ``pcscd --foreground --config DIR`` where DIR holds only a copy
  of the vpcd reader entry (no USB readers), waits until both virtual readers are listed,
  and stops it with SIGTERM (SIGKILL after a timeout) and always reaps it — an unreaped
  pcscd zombie blocks the next start. It refuses to start while another pcscd runs (there is
  one daemon socket per host), and removes stale ``/run/pcscd`` files when none does.
* :class:`CardProcess` runs ``python -m card_profiles.virtual.vpcd`` for one reader slot,
  waits until pcscd reports the card, and on stop waits until the reader is empty (pcscd
  keeps reporting a vanished card for up to ~400 ms). A missing state file is first
  manufactured (a new card keyed with ``card_key``, by default :data:`TEST_CARD_KEY`); a
  card from a pre-made state file (e.g. keyed by the issuer's HSM) is started as it is. The
  card's power-loss switch can be armed (``power_loss_after``, ``power_loss_commits``).
* :func:`pcsc_available` says why the stack cannot run here; :func:`require_pcsc` skips on
  that reason locally and fails under ``CI=true``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
VPCD_CONF = Path("/etc/reader.conf.d/vpcd")
PCSCD_RUN_DIR = Path("/run/pcscd")
PCSCD_PID_FILE = PCSCD_RUN_DIR / "pcscd.pid"
READER_BY_PORT = {35963: "Virtual PCD 00 00", 35964: "Virtual PCD 00 01"}
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
HOST_LOCK = Path("/tmp/starcard-pcscd.lock")
HOST_LOCK_TIMEOUT_S = float(os.environ.get("STARCARD_PCSCD_LOCK_TIMEOUT", "1800"))
"""pcscd has one socket per host: concurrent test runs (developers, bench) queue on this lock."""
TEST_CARD_KEY = bytes.fromhex("53544152434152442074657374206b31")
"""K_card of cards the harness manufactures itself (authenticate with StaticKeyAuthenticator)."""


def pcscd_binary() -> str | None:
    found = shutil.which("pcscd")
    if found:
        return found
    return "/usr/sbin/pcscd" if os.access("/usr/sbin/pcscd", os.X_OK) else None


def vpcd_driver() -> Path | None:
    """The driver library named by the vpcd reader entry, if the entry exists."""
    if not VPCD_CONF.is_file():
        return None
    for line in VPCD_CONF.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "LIBPATH":
            return Path(parts[1])
    return None


def pcsc_available() -> str | None:
    """None if pcscd, the vpcd driver and pyscard are all here; else why not."""
    if pcscd_binary() is None:
        return "pcscd is not installed (apt-get install pcscd)"
    if not VPCD_CONF.is_file():
        return f"no vpcd reader entry at {VPCD_CONF} (apt-get install vsmartcard-vpcd)"
    driver = vpcd_driver()
    if driver is None or not driver.is_file():
        return f"vpcd driver {driver} missing (apt-get install vsmartcard-vpcd)"
    try:
        import smartcard  # noqa: F401
    except ImportError:
        return "pyscard is not installed"
    return None


def skip_or_fail(reason: str) -> None:
    """Skips locally; under ``CI=true`` a missing real component is a failure, never a skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


def require_pcsc() -> None:
    """Skip the test if the PC/SC stack is missing, or fail under CI=true."""
    reason = pcsc_available()
    if reason is not None:
        skip_or_fail(f"PC/SC stack: {reason}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_pcscd() -> int | None:
    """PID of a pcscd that is running (or a zombie not yet reaped), else None."""
    try:
        raw = PCSCD_PID_FILE.read_bytes().replace(b"\0", b"").strip()
        if raw and _process_alive(int(raw)):
            return int(raw)
    except (OSError, ValueError):
        pass
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "pcscd":
                return int(comm.parent.name)
        except OSError:
            continue
    return None


def _is_orphaned_test_pcscd(pid: int) -> bool:
    """True for a pcscd started by this harness (private reader.conf.d), not a system one."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"--config" in args and any(a.endswith(b"/reader.conf.d") for a in args)


def _remove_stale_run_files() -> None:
    if not PCSCD_RUN_DIR.is_dir():
        return
    for entry in PCSCD_RUN_DIR.iterdir():
        if entry.is_file() or entry.is_socket():
            entry.unlink(missing_ok=True)


def _stop_process(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM (and SIGCONT, in case it is stopped), then SIGKILL; always reaped."""
    if proc.poll() is None:
        proc.terminate()
        proc.send_signal(signal.SIGCONT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class PcscStack:
    """A private pcscd serving the two vpcd readers. Use as a context manager."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.config_dir = workdir / "reader.conf.d"
        self.log_path = workdir / "pcscd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None

    @property
    def readers(self) -> list[str]:
        return list(READER_BY_PORT.values())

    def _acquire_host_lock(self) -> None:
        fd = os.open(HOST_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = time.monotonic() + HOST_LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock_fd = fd
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise RuntimeError(f"another test run holds {HOST_LOCK}") from None
                time.sleep(0.2)

    def _release_host_lock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start pcscd and wait for the vpcd readers. Raises RuntimeError on any problem."""
        reason = pcsc_available()
        if reason is not None:
            raise RuntimeError(reason)
        self._acquire_host_lock()
        try:
            self._start_locked(timeout_s)
        except BaseException:
            self._release_host_lock()
            raise

    def _start_locked(self, timeout_s: float) -> None:
        other = running_pcscd()
        if other is not None and _is_orphaned_test_pcscd(other):
            # We hold the host lock, so no live test run owns it: a run that was killed left it.
            os.kill(other, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while _process_alive(other) and time.monotonic() < deadline:
                time.sleep(0.05)
            other = running_pcscd()
        if other is not None:
            raise RuntimeError(f"another pcscd is running (pid {other}); stop it first")
        _remove_stale_run_files()
        self.config_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(VPCD_CONF, self.config_dir / "vpcd")
        binary = pcscd_binary()
        assert binary is not None
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [binary, "--foreground", "--config", str(self.config_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        from card_profiles.errors import NoReader
        from card_profiles.pcsc import list_readers

        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"pcscd exited with {self.proc.returncode}:\n{_tail(self.log_path)}"
                )
            try:
                if set(self.readers) <= set(list_readers()):
                    return
            except NoReader:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"pcscd readers not ready in {timeout_s:g} s")
            time.sleep(0.05)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop and reap pcscd (idempotent), then let the next test run have the host."""
        if self.proc is not None:
            _stop_process(self.proc, timeout_s)
            self.proc = None
        self._release_host_lock()

    def restart(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Stop and start pcscd again while keeping the host lock (a daemon restart)."""
        if self.proc is not None:
            _stop_process(self.proc, STOP_TIMEOUT_S)
            self.proc = None
        self._start_locked(timeout_s)

    def log_text(self) -> str:
        return _tail(self.log_path, 200)

    def __enter__(self) -> PcscStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class CardProcess:
    """A virtual StarCard in its own process, inserted into the vpcd reader of ``port``."""

    def __init__(
        self,
        state_path: Path,
        port: int = 35963,
        log_path: Path | None = None,
        *,
        card_key: bytes = TEST_CARD_KEY,
        serial: bytes | None = None,
        power_loss_after: int | None = None,
        power_loss_commits: int = 0,
    ) -> None:
        if port not in READER_BY_PORT:
            raise ValueError(f"vpcd has slots on {sorted(READER_BY_PORT)} only")
        self.state_path = state_path
        self.port = port
        self.reader = READER_BY_PORT[port]
        self.log_path = log_path or state_path.with_suffix(".log")
        self.card_key = card_key
        self.serial = serial
        self.power_loss_after = power_loss_after
        self.power_loss_commits = power_loss_commits
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        """Exit status of the last run, once stopped or killed."""

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("card process not started")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> CardProcess:
        """Start the card and wait until pcscd shows it present. Raises RuntimeError."""
        from card_profiles.errors import CardTimeout
        from card_profiles.pcsc import wait_for_card, wait_for_card_absent

        try:
            wait_for_card_absent(self.reader, timeout_s)
        except CardTimeout:
            raise RuntimeError(f"{self.reader!r} still holds another card") from None
        if not self.state_path.exists():
            from card_profiles.virtual.starcard_v1 import manufacture

            manufacture(self.state_path, self.serial or os.urandom(8), self.card_key)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        command = [
            sys.executable, "-m", "card_profiles.virtual.vpcd",
            "--profile", "starcard-v1",
            "--port", str(self.port),
            "--state", str(self.state_path),
            "--wait", str(timeout_s),
        ]  # fmt: skip
        if self.power_loss_after is not None:
            command += ["--power-loss-after", str(self.power_loss_after)]
            command += ["--power-loss-commits", str(self.power_loss_commits)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"card process exited with {self.proc.returncode}:\n{_tail(self.log_path)}"
                )
            try:
                wait_for_card(self.reader, 0.25)
                return self
            except CardTimeout:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"card not seen in {self.reader!r}") from None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Remove the card: terminate (kill after a timeout), reap, wait for an empty reader."""
        if self.proc is None:
            return
        _stop_process(self.proc, STOP_TIMEOUT_S)
        self.returncode = self.proc.returncode
        self.proc = None
        self.wait_removed(timeout_s)

    def kill(self) -> None:
        """SIGKILL the card (a card yanked out of the reader) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.returncode = self.proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the card hangs with the connection open."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def wait_removed(self, timeout_s: float = 10.0) -> None:
        from card_profiles.pcsc import wait_for_card_absent

        wait_for_card_absent(self.reader, timeout_s)

    def log_text(self) -> str:
        return _tail(self.log_path, 200)
