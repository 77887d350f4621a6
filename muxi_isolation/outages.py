"""Quiet logs through an outage: one trace, then a summary line per cause, then "recovered".

A storage outage fails every request the same way. Logging each failure with its trace
(about 108 lines) wrote 7.7 MB in a 5 s outage. ``OutageLog`` logs the first failure of each
cause with its trace, then at most one line per ``every`` seconds per cause (how many, first
and last time), and one "recovered" line at the first success after failures.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["OutageLog"]


@dataclass
class _Cause:
    first: float
    last: float
    count: int = 1
    told: float = 0.0  # when the last summary line went out
    told_count: int = 1


class OutageLog:
    """Rate-limited failure logging for one server (thread-safe)."""

    def __init__(
        self,
        log: logging.Logger,
        *,
        every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log, self.every, self.clock = log, every, clock
        self._causes: dict[str, _Cause] = {}
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        cause = _cause(exc)
        now = self.clock()
        with self._lock:
            seen = self._causes.get(cause)
            if seen is None:
                self._causes[cause] = _Cause(now, now, told=now)
                trace: BaseException | None = exc
                line = f"request failed ({cause}): {exc}"
            else:
                seen.count += 1
                seen.last = now
                if now - seen.told < self.every:
                    return
                trace, line = None, self._summary(cause, seen)
                seen.told, seen.told_count = now, seen.count
        self.log.error(line, exc_info=trace)

    def succeeded(self) -> None:
        if not self._causes:  # the common case, without the lock
            return
        with self._lock:
            causes, self._causes = self._causes, {}
        for cause, seen in causes.items():
            self.log.warning("recovered: %s", self._summary(cause, seen))

    def _summary(self, cause: str, seen: _Cause) -> str:
        span = seen.last - seen.first
        return f"{seen.count} requests failed over {span:.1f} s ({cause})"


def _cause(exc: BaseException) -> str:
    """What kind of failure: the error's class and its driver cause's (not the message,
    which may differ between requests of one outage)."""
    inner = exc.__cause__
    driver = getattr(inner, "orig", None) or inner
    return type(exc).__name__ + ("" if driver is None else f" from {type(driver).__name__}")
