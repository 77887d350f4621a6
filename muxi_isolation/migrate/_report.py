"""What an import did: counts per scope, and every record it did not write, with why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ImportReport", "Problem"]


@dataclass(frozen=True)
class Problem:
    """A source record that was not written: its key, and the reason."""

    key: str
    reason: str


@dataclass
class ImportReport:
    """Counts of what was written (or, in a dry run, would be), per owner.

    ``unchanged`` counts units already in the target exactly as the source has them (a
    rerun, a resumed run); ``skipped`` keys the mapping names no owner for; ``conflicts``
    units the target holds differently (left alone unless ``replace=True``); ``errors``
    units that could not be written at all (a bad scope, a mapping that raised, a record
    the target refuses).
    """

    source: str
    dry_run: bool = False
    scopes: dict[str, Counter[str]] = field(default_factory=dict)
    unchanged: int = 0
    skipped: list[Problem] = field(default_factory=list)
    conflicts: list[Problem] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)

    def add(self, owner: str, kind: str, n: int = 1) -> None:
        if n:
            self.scopes.setdefault(owner, Counter())[kind] += n

    @property
    def totals(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for counts in self.scopes.values():
            total.update(counts)
        return dict(sorted(total.items()))

    @property
    def ok(self) -> bool:
        """Nothing failed and nothing conflicted (skipped keys are the mapping's choice)."""
        return not self.errors and not self.conflicts

    def to_dict(self) -> dict[str, Any]:
        def problems(items: list[Problem]) -> list[dict[str, str]]:
            return [{"key": p.key, "reason": p.reason} for p in items]

        return {
            "source": self.source,
            "dry_run": self.dry_run,
            "scopes": {k: dict(sorted(v.items())) for k, v in sorted(self.scopes.items())},
            "totals": self.totals,
            "unchanged": self.unchanged,
            "skipped": problems(self.skipped),
            "conflicts": problems(self.conflicts),
            "errors": problems(self.errors),
        }

    def format(self, *, limit: int = 20) -> str:
        """A table of counts per scope, then the problems (the first ``limit`` of each)."""
        kinds = sorted({k for counts in self.scopes.values() for k in counts})
        title = f"import from {self.source}"
        if self.dry_run:
            title += " (dry run: nothing written)"
        if not kinds:
            title += ": nothing " + ("to write" if self.dry_run else "written")
        rows = [["scope", *kinds]]
        rows += [[owner, *(str(c[k]) for k in kinds)] for owner, c in sorted(self.scopes.items())]
        rows.append(["total", *(str(self.totals.get(k, 0)) for k in kinds)])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [title]
        for row in rows if kinds else []:
            numbers = zip(row[1:], widths[1:], strict=True)
            cells = [row[0].ljust(widths[0]), *(c.rjust(w) for c, w in numbers)]
            lines.append("  " + "  ".join(cells).rstrip())
        lines.append(
            f"  unchanged {self.unchanged}, skipped {len(self.skipped)}, "
            f"conflicts {len(self.conflicts)}, errors {len(self.errors)}"
        )
        for label, items in (("conflict", self.conflicts), ("error", self.errors)):
            for p in items[:limit]:
                lines.append(f"  {label}: {p.key}: {p.reason}")
            if len(items) > limit:
                lines.append(f"  ... and {len(items) - limit} more {label}s")
        return "\n".join(lines)
