"""StarCard card layer: transports, APDU mechanics, card profiles and sessions.

Layering (imports flow downwards only): :mod:`.transport` / :mod:`.pcsc` (the only pyscard
user) → :mod:`.apdu` → :mod:`.starcard` session over a :mod:`.profiles` profile. Nothing
above a session sees a status word; every failure is a :mod:`.errors` type.
"""

from __future__ import annotations
