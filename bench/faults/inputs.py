"""Oversized inputs: bodies to the verifier's HTTP API (the app and the terminal world of
tests/api/test_verifier_api.py) and APDUs to the card. Each must be refused with a 4xx (never
a 5xx, never a ``valid`` verdict), and the service and the card must still work after."""

from __future__ import annotations

from pathlib import Path

from card_profiles.errors import CardError
from tests.api.test_verifier_api import OPERATOR, make_world, tap, tap_body
from verifier.core.status_list import MAX_TOKEN_BYTES

from .core import Category, Probe
from .world import issuer


def refused(probe: Probe, status: int, body: str, what: str) -> None:
    probe.fault()
    probe.expect(400 <= status < 500, "errors", f"{what}: HTTP {status}")
    probe.verdict("valid" if '"valid"' in body else "refused", what)


def run(work: Path, quick: bool) -> Category:
    category = Category("inputs")
    with issuer(work / "inputs") as ctx:
        world = make_world(ctx, work / "inputs", "sqlite://")
        office = world.terminal("office-1", "office")

        def http_bodies(probe: Probe) -> None:
            genuine = tap_body(world, office)
            for field, size in (("credential", 4097), ("signature", 257), ("handle", 1025)):
                for n in (size, 1 << 20):
                    body = {**genuine, field: genuine[field] * (n // len(genuine[field]) + 1)}
                    r = office.post("/v1/verifications", json=body)
                    refused(probe, r.status_code, r.text, f"{field} of {n} characters")
            deep = "[" * 100_000 + "]" * 100_000
            r = office.post("/v1/verifications", content=deep,
                            headers={"content-type": "application/json"})  # fmt: skip
            refused(probe, r.status_code, r.text, "JSON nested 100000 deep")
            r = office.post("/v1/challenges", json={"context": "x" * 10_000})
            refused(probe, r.status_code, r.text, "a 10000-character context")
            token = b"\xd2" + bytes(MAX_TOKEN_BYTES)
            headers = {**OPERATOR, "content-type": "application/statuslist+cwt"}
            r = world.client.post("/v1/status-lists", content=token, headers=headers)
            refused(probe, r.status_code, r.text, "a status list one byte over the cap")
            after = tap(world, office)
            probe.expect(after.get("state") == "valid", "errors", f"tap after: {after}")

        def apdus(probe: Probe) -> None:
            transport = world.session._transport  # the card under the world's session
            for length in (256, 261, 4096, 65_535, 70_000):
                for apdu in (
                    bytes([0x00, 0xA4, 0x04, 0x00, 0xFF]) + bytes(length),
                    bytes([0x80, 0x88, 0x00, 0x00, 0x00])
                    + min(length, 0xFFFF).to_bytes(2, "big")
                    + bytes(length),
                ):
                    probe.fault()
                    try:
                        _, sw = transport.transmit(apdu)
                        probe.expect(sw != 0x9000, "errors", f"{len(apdu)}-byte APDU got 9000")
                    except (CardError, ValueError):
                        pass
            after = tap(world, office)
            probe.expect(after.get("state") == "valid", "errors", f"tap after: {after}")

        category.run("http_oversized_bodies", http_bodies)
        category.run("oversized_apdus", apdus)
    return category
