"""A progress display for long imports: tqdm when it is installed, else a stderr counter.

Off unless asked for or stderr is a terminal, so tests and pipes stay quiet.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from .._closing import Closing

__all__ = ["Progress"]


class Progress(Closing):
    """Counts work done; shows it on ``stream`` at most every ``interval`` seconds."""

    def __init__(
        self,
        total: int | None,
        description: str,
        *,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        interval: float = 0.2,
    ) -> None:
        self.total, self.description, self.count = total, description, 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.interval = interval
        self._shown = 0.0
        self._bar: Any = None
        if self.enabled:
            try:
                from tqdm import tqdm  # type: ignore[import-untyped]
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, desc=description, unit="rec", file=self.stream)

    def update(self, n: int = 1) -> None:
        self.count += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._shown >= self.interval:
            self._shown = now
            self._show()

    def _show(self, end: str = "") -> None:
        of = f"/{self.total}" if self.total is not None else ""
        self.stream.write(f"\r{self.description}: {self.count}{of}{end}")
        self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            self._show("\n")
