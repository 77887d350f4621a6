"""The seed's scenario through the Python SDK, on the embedded default (SQLite).

    User A: "Remember I like Python"   -> stored in user A's persistent memory
    User B: "What language do I like?" -> searches user B's memory: empty

Run: python examples/quickstart.py   (no network, no API key; about a second)
For the same over HTTP, with the demo agent: muxi-isolation demo
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from muxi_isolation import Isolation, SessionNotFound

PREFERENCE = {"kind": "preference", "topic": "language"}


def favourite_language(iso: Isolation, user_id: str) -> str | None:
    found = iso.memories(user_id).list(filter=PREFERENCE)
    return found[-1].metadata["value"] if found else None


def main() -> None:
    db = Path(tempfile.mkdtemp()) / "quickstart.db"
    url = f"sqlite:///{db}"
    with Isolation.from_config({"memory": {"persistent": {"connection_string": url}}}) as iso:
        alice, bob, other_tenant = "tenant_a:user_a", "tenant_a:user_b", "tenant_b:user_a"
        session = iso.create_session(user_id=alice)
        iso.messages(session.id, user_id=alice).add("user", "Remember I like Python")
        iso.memories(alice).add("I like Python", {**PREFERENCE, "value": "Python"})

        for user in (alice, bob, other_tenant):
            print(f"{user:>16}: favourite language = {favourite_language(iso, user)}")
        assert favourite_language(iso, alice) == "Python"
        assert favourite_language(iso, bob) is None
        assert favourite_language(iso, other_tenant) is None  # same user id, other tenant

        try:
            iso.history(session.id, user_id=bob)
            raise AssertionError("user B read user A's session")
        except SessionNotFound:
            print(f"\nuser B opening user A's session {session.id}: SessionNotFound")
        print(f"user A's history: {[m.content for m in iso.history(session.id, alice)]}")
        print(f"\nstored in {db}; isolation held.")


if __name__ == "__main__":
    main()
