"""A separate process writing to a shared SQLite file, for tests/security/test_faults.py.

    python sqlite_writer.py DB_PATH NAME COUNT START_AT

Waits until the clock reads START_AT (so both writers begin together), then appends COUNT
messages to its own scope and COUNT to one session every writer shares,
upserts COUNT memories, and prints one JSON line: what it was acknowledged.
"""

from __future__ import annotations

import json
import sys
import time

from muxi_isolation import Memory, Message, Scope
from muxi_isolation.stores.sql import SQLBackend

SHARED = Scope("t_shared", "everyone", "s")


def main(path: str, name: str, count: int, start_at: float) -> None:
    backend = SQLBackend(f"sqlite:///{path}", embedding_dimension=None)
    while time.time() < start_at:
        time.sleep(0.001)
    own = Scope("t_proc", name, "s")
    acked: dict[str, list[str]] = {"own": [], "shared": [], "memories": []}
    for i in range(count):
        content = f"{name}#{i}"
        backend.append_messages(own, [Message("user", content)])
        acked["own"].append(content)
        backend.append_messages(SHARED, [Message("user", content)])
        acked["shared"].append(content)
        backend.upsert_memories(own.user(), [Memory(f"m{i}", content)])
        acked["memories"].append(f"m{i}")
    backend.close()
    print(json.dumps(acked))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
