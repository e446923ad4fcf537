"""Virtual cards: applets as pure objects, plus an adapter that plugs one into vpcd.

:class:`~card_profiles.virtual.starcard_v1.VirtualStarCard` is a real StarCard v1
implementation (not a mock); :mod:`card_profiles.virtual.vpcd` connects it to pcscd's vpcd
driver so it is reached through the real PC/SC stack. Nothing here imports pyscard.
"""

from __future__ import annotations
