"""``starcard-hsm``: the key ceremony (root, issuer and status keys, trust list, rotation).

Subcommands: ``init-root``, ``create-key``, ``rotate``, ``retire``, ``sign-trust-list``,
``keys``, ``audit``. The HSM is chosen by options or environment:

* ``--backend sim`` (default): :class:`~hsm_sim.sim.HsmSim` on ``--hsm-file``
  (``STARCARD_HSM_PATH``), passphrase from the variable named by ``--passphrase-env``
  (default ``STARCARD_HSM_PASSPHRASE``);
* ``--backend remote``: :class:`~hsm_sim.client.RemoteHsm` on ``--socket``
  (``STARCARD_HSM_SOCKET``);
* ``--backend pkcs11``: :class:`~hsm_sim.pkcs11_backend.Pkcs11Hsm` with ``--module``
  (``STARCARD_PKCS11_MODULE``), ``--token`` (``STARCARD_PKCS11_TOKEN``), PIN from the
  variable named by ``--pin-env`` (default ``STARCARD_PKCS11_PIN``).

State: the key register (:mod:`hsm_sim.register`, ``--register``, by default
``key-register.json`` next to the HSM file) and, next to it, the append-only audit journal
``<register>.audit.jsonl``: one line per ceremony action (``kind: "ceremony"``) followed by
the HSM's own audit events of that action (``kind: "hsm"``), failures included.

Time is an argument: ``--now`` (seconds since the epoch) defaults to the clock, read here
and nowhere else.

The trust-list format belongs to ``verifier.core``, which ``hsm_sim`` may not import: the
trust-list signing function is injected (:class:`TrustListIssuer`, :func:`build_app`). The
module-level :data:`app` has none, so its ``sign-trust-list`` refuses with a clear message;
the composition root outside ``hsm_sim`` builds the full app with ``build_app(issuer_fn)``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Protocol

import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hsm_sim.audit import event_to_json
from hsm_sim.errors import HsmError
from hsm_sim.port import Hsm
from hsm_sim.purpose import KeyPurpose
from hsm_sim.register import (
    PURPOSES,
    KeyRegister,
    KeyUse,
    RegisteredKey,
    RegisterError,
    RootKey,
    kid_of,
)
from hsm_sim.signer import Signer
from hsm_sim.storage import write_atomically

__all__ = ["CeremonyError", "ListedKey", "TrustListIssuer", "app", "build_app"]

DAY = 86_400
DEFAULT_SIGN_DAYS = 730
DEFAULT_VERIFY_DAYS = 365
"""After ``sign_until`` a key stays trusted this long (credentials live at most a year)."""
DEFAULT_LEAD_DAYS = 7
"""A successor is listed this long before it signs, so every verifier knows it first."""
DEFAULT_TRUST_LIST_DAYS = 30


class CeremonyError(HsmError):
    """A ceremony step that breaks a rule (e.g. a second root, rotating without a key)."""


@dataclass(frozen=True)
class ListedKey:
    """One key of a trust list to sign, in ``hsm_sim``'s own terms."""

    public_key: ec.EllipticCurvePublicKey
    purpose: KeyUse
    sign_from: int
    sign_until: int
    verify_until: int


class TrustListIssuer(Protocol):
    """Signs a trust list with ``root_signer`` (purpose TRUST_LIST_ROOT); returns its bytes.

    Implemented outside ``hsm_sim`` on ``verifier.core.trust_list.issue_trust_list``.
    """

    def __call__(
        self,
        keys: Sequence[ListedKey],
        *,
        issuer: str,
        sequence: int,
        iat: int,
        exp: int,
        root_signer: Signer,
    ) -> bytes: ...


class Backend(StrEnum):
    sim = "sim"
    remote = "remote"
    pkcs11 = "pkcs11"


class Use(StrEnum):
    credential = "credential"
    status_list = "status_list"


@dataclass
class Ceremony:
    """What every subcommand needs: how to open the HSM, the register, the clock."""

    open_hsm: Callable[[], Hsm]
    register_path: Path
    now: int
    trust_list_issuer: TrustListIssuer | None

    @property
    def journal_path(self) -> Path:
        return self.register_path.with_name(self.register_path.name + ".audit.jsonl")

    def journal(self, records: list[dict[str, Any]]) -> None:
        """Append ``records`` to the audit journal (one JSON line each, fsynced)."""
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextmanager
    def action(self, name: str, **fields: Any) -> Iterator[tuple[Hsm, KeyRegister]]:
        """Open the HSM and the register for one action; journal it, success or failure."""
        record: dict[str, Any] = {"kind": "ceremony", "time": self.now, "action": name}
        record.update(fields)
        hsm: Hsm | None = None
        start = 0
        try:
            register = KeyRegister.load(self.register_path)
            hsm = self.open_hsm()
            start = len(hsm.audit_log())
            yield hsm, register
            record.update(ok=True, detail="")
        except Exception as exc:  # journalled, then re-raised
            record.update(ok=False, detail=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            events: list[dict[str, Any]] = []
            if hsm is not None:
                try:
                    events = [{"kind": "hsm", **event_to_json(e)} for e in hsm.audit_log()[start:]]
                finally:
                    hsm.close()
            self.journal([record, *events])


def build_app(trust_list_issuer: TrustListIssuer | None = None) -> typer.Typer:
    """The ``starcard-hsm`` Typer app; ``sign-trust-list`` needs ``trust_list_issuer``."""
    cli = typer.Typer(
        help="StarCard key ceremony: root, issuer and status keys, trust list, rotation.",
        no_args_is_help=True,
    )

    @cli.callback()
    def main(
        ctx: typer.Context,
        backend: Annotated[
            Backend, typer.Option(envvar="STARCARD_HSM_BACKEND", help="HSM backend")
        ] = Backend.sim,
        hsm_file: Annotated[
            Path | None, typer.Option(envvar="STARCARD_HSM_PATH", help="hsm_sim key file")
        ] = None,
        passphrase_env: Annotated[
            str, typer.Option(help="variable holding the hsm_sim passphrase")
        ] = "STARCARD_HSM_PASSPHRASE",  # noqa: S107 (a variable name, not a secret)
        socket_path: Annotated[
            Path | None,
            typer.Option("--socket", envvar="STARCARD_HSM_SOCKET", help="hsm_sim server"),
        ] = None,
        module: Annotated[
            str, typer.Option(envvar="STARCARD_PKCS11_MODULE", help="PKCS#11 module path")
        ] = "/usr/lib/softhsm/libsofthsm2.so",
        token: Annotated[
            str | None, typer.Option(envvar="STARCARD_PKCS11_TOKEN", help="token label")
        ] = None,
        pin_env: Annotated[
            str, typer.Option(help="variable holding the token's user PIN")
        ] = "STARCARD_PKCS11_PIN",
        register: Annotated[
            Path | None,
            typer.Option(envvar="STARCARD_KEY_REGISTER", help="key register JSON file"),
        ] = None,
        now: Annotated[
            int | None, typer.Option(help="the time, seconds since the epoch (default: now)")
        ] = None,
    ) -> None:
        opener, default_dir = _hsm_opener(
            backend, hsm_file, passphrase_env, socket_path, module, token, pin_env
        )
        if register is None:
            if default_dir is None:
                raise typer.BadParameter("--register is required with this backend")
            register = default_dir / "key-register.json"
        clock = int(time.time()) if now is None else now
        ctx.obj = Ceremony(opener, register, clock, trust_list_issuer)

    @cli.command("init-root")
    def init_root(
        ctx: typer.Context,
        label: Annotated[str, typer.Option(help="HSM label of the root key")],
        issuer: Annotated[str, typer.Option(help="issuer name put in trust lists")] = "starcard",
        public_out: Annotated[
            Path | None, typer.Option(help="write the root public key (PEM) here")
        ] = None,
    ) -> None:
        """Create the trust-list root key (once); print its kid, write its public key."""
        ceremony = _ceremony(ctx)
        with _reported(), ceremony.action("init-root", label=label) as (hsm, reg):
            if reg.root is not None:
                raise CeremonyError(f"the register already has a root ({reg.root.label!r})")
            public_key = hsm.create_key(label, KeyPurpose.TRUST_LIST_ROOT)
            kid = kid_of(public_key).hex()
            reg.issuer = issuer
            reg.root = RootKey(label, kid, ceremony.now)
            reg.save(ceremony.register_path)
            out = public_out or ceremony.register_path.with_name("root-public.pem")
            write_atomically(out, _pem(public_key))
            os.chmod(out, 0o644)
        typer.echo(f"root {label} kid {kid}; public key in {out} (pin it in every verifier)")

    @cli.command("create-key")
    def create_key(
        ctx: typer.Context,
        purpose: Annotated[Use, typer.Option(help="what the key signs")],
        label: Annotated[str, typer.Option(help="HSM label of the new key")],
        sign_from: Annotated[int | None, typer.Option(help="epoch s; default now")] = None,
        sign_days: Annotated[int, typer.Option(help="signing window")] = DEFAULT_SIGN_DAYS,
        verify_days: Annotated[
            int, typer.Option(help="trusted this long after signing ends")
        ] = DEFAULT_VERIFY_DAYS,
    ) -> None:
        """Create a credential or status-list key and register its windows."""
        ceremony = _ceremony(ctx)
        start = ceremony.now if sign_from is None else sign_from
        with (
            _reported(),
            ceremony.action("create-key", label=label, purpose=purpose.value) as (
                hsm,
                reg,
            ),
        ):
            key = _new_key(hsm, reg, ceremony, label, purpose.value, start, sign_days, verify_days)
            reg.save(ceremony.register_path)
        typer.echo(_describe(key))

    @cli.command()
    def rotate(
        ctx: typer.Context,
        purpose: Annotated[Use, typer.Option(help="which kind of key to rotate")],
        label: Annotated[str, typer.Option(help="HSM label of the successor")],
        lead_days: Annotated[
            int, typer.Option(help="listed this long before it signs")
        ] = DEFAULT_LEAD_DAYS,
        sign_days: Annotated[int, typer.Option(help="signing window")] = DEFAULT_SIGN_DAYS,
        verify_days: Annotated[
            int, typer.Option(help="trusted this long after signing ends")
        ] = DEFAULT_VERIFY_DAYS,
    ) -> None:
        """Create the successor of the active key; the old one signs until it takes over."""
        ceremony = _ceremony(ctx)
        with (
            _reported(),
            ceremony.action("rotate", label=label, purpose=purpose.value) as (
                hsm,
                reg,
            ),
        ):
            current = reg.active(purpose.value, ceremony.now)
            if current is None:
                raise CeremonyError(f"no active {purpose.value} key to rotate: use create-key")
            if lead_days < 0:
                raise CeremonyError("lead-days must not be negative")
            handover = ceremony.now + lead_days * DAY
            if handover < current.sign_until:
                reg.replace(_with(current, sign_until=max(handover, current.sign_from + 1)))
            successor = _new_key(
                hsm, reg, ceremony, label, purpose.value, handover, sign_days, verify_days
            )
            reg.save(ceremony.register_path)
        typer.echo(f"{current.label} signs until {_iso(reg.key(current.label).sign_until)}")
        typer.echo(_describe(successor))
        typer.echo("now run sign-trust-list and publish it before the successor signs")

    @cli.command()
    def retire(
        ctx: typer.Context,
        label: Annotated[str, typer.Option(help="HSM label of the key to retire")],
    ) -> None:
        """Retire a key for good: it signs nothing more; it stays listed for verification."""
        ceremony = _ceremony(ctx)
        with _reported(), ceremony.action("retire", label=label) as (hsm, reg):
            if reg.root is not None and reg.root.label == label:
                raise CeremonyError("the root is pinned by verifiers: it cannot be retired here")
            key = reg.key(label)
            hsm.retire_key(label)
            sign_until = key.sign_until
            if key.sign_from < ceremony.now < sign_until:
                sign_until = ceremony.now
            reg.replace(_with(key, sign_until=sign_until, retired_at=ceremony.now))
            reg.save(ceremony.register_path)
        typer.echo(f"retired {label}; listed for verification until {_iso(key.verify_until)}")

    @cli.command("sign-trust-list")
    def sign_trust_list(
        ctx: typer.Context,
        out: Annotated[Path, typer.Option(help="where to write the signed trust list")],
        valid_days: Annotated[int, typer.Option(help="validity")] = DEFAULT_TRUST_LIST_DAYS,
    ) -> None:
        """Sign the trust list of every listed key with the root; write it to OUT."""
        ceremony = _ceremony(ctx)
        with _reported(), ceremony.action("sign-trust-list", out=str(out)) as (hsm, reg):
            if ceremony.trust_list_issuer is None:
                raise CeremonyError(
                    "trust-list signing is not wired into this build of starcard-hsm "
                    "(hsm_sim.ceremony.build_app needs the verifier's trust-list function)"
                )
            if reg.root is None:
                raise CeremonyError("no root key: run init-root first")
            listed = reg.listed(ceremony.now)
            if not listed:
                raise CeremonyError("no key to list: run create-key first")
            keys = [
                ListedKey(
                    hsm.public_key(k.label),
                    k.purpose,
                    k.sign_from,
                    k.sign_until,
                    k.verify_until,
                )
                for k in listed
            ]
            for key, entry in zip(keys, listed, strict=True):
                if kid_of(key.public_key).hex() != entry.kid:
                    raise CeremonyError(f"HSM key {entry.label!r} differs from the register")
            root = hsm.signer(reg.root.label, KeyPurpose.TRUST_LIST_ROOT)
            sequence = reg.sequence + 1
            data = ceremony.trust_list_issuer(
                keys,
                issuer=reg.issuer,
                sequence=sequence,
                iat=ceremony.now,
                exp=ceremony.now + valid_days * DAY,
                root_signer=root,
            )
            write_atomically(out, data)
            os.chmod(out, 0o644)
            reg.sequence = sequence
            reg.save(ceremony.register_path)
        typer.echo(f"trust list seq {sequence} with {len(keys)} keys written to {out}")

    @cli.command("keys")
    def list_keys(ctx: typer.Context) -> None:
        """Print the key register."""
        reg = KeyRegister.load(_ceremony(ctx).register_path)
        if reg.root is not None:
            typer.echo(f"root {reg.root.label} kid {reg.root.kid}")
        for key in reg.keys:
            typer.echo(_describe(key))
        typer.echo(f"last trust list seq {reg.sequence}")

    @cli.command()
    def audit(
        ctx: typer.Context,
        as_json: Annotated[bool, typer.Option("--json", help="raw JSON lines")] = False,
    ) -> None:
        """Print the ceremony's audit journal (actions and HSM events), oldest first."""
        path = _ceremony(ctx).journal_path
        if not path.exists():
            typer.echo("no audit journal yet")
            return
        for line in path.read_text(encoding="utf-8").splitlines():
            if as_json:
                typer.echo(line)
                continue
            rec = json.loads(line)
            status = "ok " if rec.get("ok") else "ERR"
            what = rec.get("action") or rec.get("op")
            label = rec.get("label", "")
            detail = rec.get("detail") or ""
            typer.echo(f"{_iso(int(rec['time']))} {rec['kind']:9} {status} {what} {label} {detail}")

    return cli


# -- helpers -------------------------------------------------------------------------------


def _ceremony(ctx: typer.Context) -> Ceremony:
    obj = ctx.obj
    assert isinstance(obj, Ceremony)
    return obj


@contextmanager
def _reported() -> Iterator[None]:
    """Turn HSM, register and ceremony errors into a message and exit status 1."""
    try:
        yield
    except (HsmError, ValueError, OSError) as exc:
        typer.echo(f"starcard-hsm: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None


def _new_key(
    hsm: Hsm,
    reg: KeyRegister,
    ceremony: Ceremony,
    label: str,
    purpose: KeyUse,
    sign_from: int,
    sign_days: int,
    verify_days: int,
) -> RegisteredKey:
    if reg.has_label(label):
        raise RegisterError(f"label {label!r} is already registered")
    if sign_days <= 0 or verify_days < 0:
        raise CeremonyError("sign-days must be positive and verify-days not negative")
    sign_until = sign_from + sign_days * DAY
    windows = (sign_from, sign_until, sign_until + verify_days * DAY)
    public_key = hsm.create_key(label, PURPOSES[purpose])
    key = RegisteredKey(label, purpose, kid_of(public_key).hex(), ceremony.now, *windows)
    reg.add(key)
    return key


def _with(key: RegisteredKey, **changes: Any) -> RegisteredKey:
    from dataclasses import replace

    return replace(key, **changes)


def _pem(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe(key: RegisteredKey) -> str:
    retired = "" if key.retired_at is None else f" retired {_iso(key.retired_at)}"
    return (
        f"{key.purpose:11} {key.label} kid {key.kid} signs {_iso(key.sign_from)} .. "
        f"{_iso(key.sign_until)}, trusted until {_iso(key.verify_until)}{retired}"
    )


def _hsm_opener(
    backend: Backend,
    hsm_file: Path | None,
    passphrase_env: str,
    socket_path: Path | None,
    module: str,
    token: str | None,
    pin_env: str,
) -> tuple[Callable[[], Hsm], Path | None]:
    """How to open the chosen HSM, and the directory the register defaults to."""
    if backend is Backend.sim:
        if hsm_file is None:
            raise typer.BadParameter("--hsm-file (or STARCARD_HSM_PATH) is required")
        path = hsm_file

        def open_sim() -> Hsm:
            from hsm_sim.sim import HsmSim

            return HsmSim(path, _secret(passphrase_env).encode("utf-8"))

        return open_sim, path.parent
    if backend is Backend.remote:
        if socket_path is None:
            raise typer.BadParameter("--socket (or STARCARD_HSM_SOCKET) is required")
        sock = socket_path

        def open_remote() -> Hsm:
            from hsm_sim.client import RemoteHsm

            return RemoteHsm(sock)

        return open_remote, None
    if token is None:
        raise typer.BadParameter("--token (or STARCARD_PKCS11_TOKEN) is required")
    token_label = token

    def open_pkcs11() -> Hsm:
        from hsm_sim.pkcs11_backend import Pkcs11Hsm

        return Pkcs11Hsm(module, token_label, _secret(pin_env))

    return open_pkcs11, None


def _secret(variable: str) -> str:
    value = os.environ.get(variable, "")
    if not value:
        raise CeremonyError(f"${variable} is not set or empty")
    return value


app = build_app()
"""``starcard-hsm`` without trust-list signing (see the module docstring)."""


if __name__ == "__main__":
    app()
