"""``make faults``: the fault and attack catalogue, run as code, counted and classified.

See docs/faults.md. ``python -m bench.faults`` writes ``bench/faults.json``; ``QUICK=1``
runs a subset of every sweep.
"""
