"""The seed's scenario, on the embedded default (SQLite), in a few lines of the SDK.

    User A: "Remember I like Python"   -> stored in user A's persistent memory
    User B: "What language do I like?" -> searches user B's memory: empty
                                          "I don't know your preference yet."

Run: python examples/quickstart.py   (no network, no API key; about a second)
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from muxi_isolation import Isolation, SessionNotFound

LIKE = re.compile(r"remember i like (?P<thing>.+?)[.!]?$", re.IGNORECASE)


def answer(iso: Isolation, user_id: str, session_id: str, text: str) -> str:
    """A toy agent: remembers a stated preference, answers from this user's memory only."""
    memory = iso.memories(user_id)
    if match := LIKE.match(text.strip()):
        thing = match["thing"]
        memory.add(f"likes {thing}", {"kind": "preference", "value": thing})
        reply = f"Got it: you like {thing}."
    elif "what language do i like" in text.lower():
        found = memory.list(filter={"kind": "preference"})
        reply = f"You like {found[-1].metadata['value']}." if found else (
            "I don't know your preference yet."
        )
    else:
        reply = "Tell me what you like, and I will remember it."
    iso.messages(session_id, user_id).add("user", text)
    iso.messages(session_id, user_id).add("assistant", reply)
    return reply


def main() -> None:
    db = Path(tempfile.mkdtemp()) / "quickstart.db"
    config = {"memory": {"persistent": {"provider": "sqlite", "connection_string": f"sqlite:///{db}"}}}
    with Isolation.from_config(config) as iso:
        print(f"storage: SQLite at {db}\n")
        users = ["tenant_a:user_a", "tenant_a:user_b", "tenant_b:user_a"]
        sessions = {user: iso.create_session(user_id=user) for user in users}
        script = [
            ("tenant_a:user_a", "Remember I like Python"),
            ("tenant_a:user_b", "What language do I like?"),
            ("tenant_a:user_a", "What language do I like?"),
            ("tenant_b:user_a", "What language do I like?"),  # same user id, other tenant
        ]
        replies = []
        for user, text in script:
            reply = answer(iso, user, sessions[user].id, text)
            replies.append(reply)
            print(f"{user:>16} > {text}\n{'':>16} < {reply}")

        a_session = sessions["tenant_a:user_a"].id
        try:
            iso.history(a_session, user_id="tenant_a:user_b")
            leaked = True
        except SessionNotFound:
            leaked = False
        print(f"\nuser_b opening user_a's session: {'LEAKED' if leaked else 'SessionNotFound'}")
        print(f"user_a's history: {len(iso.history(a_session, user_id='tenant_a:user_a'))} messages")

    assert replies == [
        "Got it: you like Python.",
        "I don't know your preference yet.",
        "You like Python.",
        "I don't know your preference yet.",
    ], replies
    assert not leaked
    print("\nisolation held: no user saw another user's memory or session.")


if __name__ == "__main__":
    main()
