"""A clock the tests move by hand (``clock.now += timedelta(...)``): what ``Isolation``,
``SessionManager`` and the adapters take as ``clock``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

__all__ = ["Clock"]


class Clock:
    def __init__(self, now: datetime = datetime(2025, 1, 8, 10, 0, tzinfo=timezone.utc)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
