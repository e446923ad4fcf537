"""Time rules shared by the verification steps. Time is always an argument (``now``, int
seconds since the epoch); nothing in :mod:`verifier.core` reads a clock."""

from __future__ import annotations

__all__ = ["CLOCK_SKEW_S"]

#: Allowed disagreement between an offline terminal's clock and the issuer's, in seconds.
#: Applied to ``nbf``/``exp`` of credentials and to ``iat`` of status list tokens (a token
#: "from the future" beyond this is refused). Never applied to a status list's ``exp``: an
#: expired list is never used. Five minutes: terminals are expected to sync time daily.
CLOCK_SKEW_S = 300
