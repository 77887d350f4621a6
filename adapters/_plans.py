"""The plan machinery lives in the core (``muxi_isolation.plans``): a method's logic once,
for its sync and its async half. Re-exported here for the adapters."""

from __future__ import annotations

from muxi_isolation.plans import Plan, Step, arun, run, step, twins

__all__ = ["Plan", "Step", "arun", "run", "step", "twins"]
