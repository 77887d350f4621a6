"""Reading a JSON file whole, with every failure an ``UnreadableSource`` naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import UnreadableSource

__all__ = ["load_json"]


def load_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as exc:
        raise UnreadableSource(f"no such file: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadableSource(f"cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise UnreadableSource(f"{path} is not valid JSON: {exc}") from exc
    return data
