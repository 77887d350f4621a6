"""Running the examples and docs blocks as a new user would: a fresh interpreter, warnings
as errors, the user's own environment.

Not traced by coverage: these runs exercise library paths the in-process tests already
measure, and tracing each interpreter's framework imports cost about a fifth of their time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def user_env(**extra: str) -> dict[str, str]:
    """This environment without the suite's ``MUXI_`` settings and coverage's hooks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUXI_", "COVERAGE_"))}
    return {**env, **extra}


def run_python(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -W error <args>`` in ``cwd``; the caller checks the outcome."""
    return subprocess.run(
        [sys.executable, "-W", "error", *args],
        cwd=cwd,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
