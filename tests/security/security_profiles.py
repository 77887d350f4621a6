"""Hypothesis settings for the security suite: a CI profile and a long one.

    MUXI_HYPOTHESIS_PROFILE=ci     (default) derandomized, no example database, sized so the
                                   whole tests/security folder runs in about a minute on 2 cores
    MUXI_HYPOTHESIS_PROFILE=long   random, many more examples and longer runs (minutes)

The profiles are applied per test (``profile(...)``), never loaded globally, so the rest of
the suite keeps its own hypothesis settings.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings

__all__ = ["PROFILE", "profile", "scaled"]

PROFILE = os.environ.get("MUXI_HYPOTHESIS_PROFILE", "ci")
if PROFILE not in ("ci", "long"):
    raise RuntimeError(f"MUXI_HYPOTHESIS_PROFILE must be 'ci' or 'long', not {PROFILE!r}")

_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile(
    "muxi-security-ci",
    derandomize=True,  # the same examples on every run: no flakes in CI
    database=None,
    deadline=None,  # real databases on a shared 2-core machine: timing is not the property
    print_blob=True,
    suppress_health_check=_SLOW,
)
settings.register_profile(
    "muxi-security-long",
    derandomize=False,
    deadline=None,
    print_blob=True,
    suppress_health_check=_SLOW,
)

# (ci, long) sizes per knob; tests ask for a knob by name.
_SIZES: dict[str, tuple[int, int]] = {
    "machine_examples": (10, 100),
    "machine_steps": (35, 80),
    "filter_examples": (60, 1500),
}


def scaled(knob: str) -> int:
    ci, long = _SIZES[knob]
    return ci if PROFILE == "ci" else long


def profile(**overrides: Any) -> settings:
    """The active profile, with per-test overrides."""
    return settings(settings.get_profile(f"muxi-security-{PROFILE}"), **overrides)
