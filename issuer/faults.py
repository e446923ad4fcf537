"""Named fault points: the process dies on the spot when a test asks for it.

``fault_point(name)`` ends the process with :data:`FAULT_EXIT` (``os._exit``: no cleanup, no
flush, no rollback, no commit — as a power cut or ``kill -9`` would) when the environment
variable :data:`FAULT_ENV` names that point. The variable is read once, at import; when it
is not set a fault point costs one comparison with ``None``.

Points sit right before and right after each commit of a multi-step operation: ``*.before_commit``
*inside* the transaction (the kill loses it), ``*.after_commit`` right after it (the kill
keeps it). ``docs/issuance.md`` lists the points of issuance and revocation; the kill tests
(``tests/api/test_issuance_kill.py``) run the issuer in a subprocess once per point.
"""

from __future__ import annotations

import os

__all__ = ["FAULT_ENV", "FAULT_EXIT", "fault_point"]

FAULT_ENV = "STARCARD_FAULT_AT"
FAULT_EXIT = 86
"""The exit status of a process killed by a fault point (distinct from crashes and signals)."""

_TARGET: str | None = os.environ.get(FAULT_ENV) or None


def fault_point(name: str) -> None:
    """Dies here (exit status :data:`FAULT_EXIT`) if ``STARCARD_FAULT_AT`` equals ``name``."""
    if _TARGET is not None and name == _TARGET:
        os.write(2, f"fault point {name}: exiting\n".encode())
        os._exit(FAULT_EXIT)
