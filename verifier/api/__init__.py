"""Merchant-facing verifier service (FastAPI)."""
