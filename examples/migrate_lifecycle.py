"""A user's data lifecycle: import an unscoped store, export a user, forget them, purge.

1. A LlamaIndex ``SimpleChatStore`` file keyed ``"tenant:user:chat"`` is imported, each key
   mapped to its owner by a template (a dry run first, then the real run, then a rerun
   that writes nothing).
2. One user is exported to JSON Lines and imported into a second database.
3. The user is forgotten in the first database: every row, with counts.
4. Expired sessions past their retention are purged; memories stay.

Run: python examples/migrate_lifecycle.py   (SQLite in a temporary directory; ~1 second)
The same from a shell: muxi-isolation import / export-user / forget-user / purge-expired.
"""

from __future__ import annotations

import json
import tempfile
from datetime import timedelta
from pathlib import Path

from muxi_isolation import Memory, Scope, open_backend
from muxi_isolation.migrate import (
    export_user,
    forget_user,
    purge_expired,
    run_import,
)
from muxi_isolation.migrate.sources import LlamaIndexSimpleChat, MuxiExport
from muxi_isolation.sessions import utc_now


def chat_store_file(folder: Path) -> Path:
    """What ``SimpleChatStore.persist()`` writes: one list of messages per key."""

    def text(role: str, words: str) -> dict[str, object]:
        return {"role": role, "blocks": [{"block_type": "text", "text": words}]}

    store = {
        "tenant_a:ann:trip": [text("user", "Book Lisbon"), text("assistant", "Booked.")],
        "tenant_a:bob:trip": [text("user", "Book Oslo")],
        "tenant_b:ann:music": [text("user", "Play jazz")],
    }
    path = folder / "chat_store.json"
    path.write_text(json.dumps({"store": store, "class_name": "SimpleChatStore"}))
    return path


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    first = open_backend(f"sqlite:///{folder / 'first.db'}", embedding_dimension=None)
    source = chat_store_file(folder)
    template = "{tenant}:{user}:{session}"

    print(run_import(LlamaIndexSimpleChat(source), first, template, dry_run=True).format())
    print(run_import(LlamaIndexSimpleChat(source), first, template).format())
    print(run_import(LlamaIndexSimpleChat(source), first, template).format())  # a rerun
    bob = Scope("tenant_a", "bob")
    first.upsert_memories(bob, [Memory("home", "bob lives in Oslo")])

    ann = Scope("tenant_a", "ann")
    export = folder / "ann.jsonl"
    with export.open("w", encoding="utf-8") as out:
        print("exported:", export_user(first, ann, out))
    second = open_backend(f"sqlite:///{folder / 'second.db'}", embedding_dimension=None)
    print(run_import(MuxiExport(export), second, lambda key: key).format())
    assert [m.content for m in second.get_messages(ann.with_session("trip"))] == [
        "Book Lisbon",
        "Booked.",
    ]

    print(forget_user(first, ann).format())
    assert first.list_sessions(ann) == [] and first.list_message_sessions(ann) == []
    assert first.list_sessions(Scope("tenant_b", "ann"))  # the other tenant's ann stays

    # imported sessions are live for an hour; a day later, with a one-hour retention:
    report = purge_expired(first, 3600, clock=lambda: utc_now() + timedelta(days=1))
    print(report.format())
    assert first.list_sessions(bob) == []  # his trip is gone...
    assert [m.content for m in first.list_memories(bob)] == ["bob lives in Oslo"]  # ...not him
    first.close()
    second.close()
    print("lifecycle done: imported, exported, forgotten, purged")


if __name__ == "__main__":
    main()
