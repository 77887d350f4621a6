"""The audit trail: an event for every decision that matters, in a tamper-evident chain.

    audit:
      enabled: true        # off: nothing is recorded
      sink: database       # database (the backend's own table) | log (JSON lines) | none
      reads: false         # also every read (costs a write per read: see the benchmark)
      writes: false        # also every write
      retention_days: 365  # `muxi-isolation audit prune` deletes older events

What is recorded by default: each refusal (``MissingScope``, ``ScopeViolation``,
``ReservedKey``, 401/403 at the HTTP edge), each id answered as missing (an unknown id
and another user's id look the same, by design, so both are recorded), each record the
verification dropped, and each admin or tenant-wide act (export, forget, purge, import,
scope-key rotation, an admin key acting as a user). An event holds who and what, never
content: time, tenant, user, session, actor (a key id, or ``app``), interface (core,
langchain, langgraph, llamaindex, http, cli), operation, outcome and target ids.

The hooks sit on the storage pipeline (``instrument`` wraps the public methods of
``Backend``, sync and async alike), so every interface above it is covered at once; the HTTP
edge and the CLI name themselves and their actor with ``acting``. Each event is written in
its own short transaction, after the call: a refusal's event is never rolled back with it.

Per tenant the events form a hash chain: each stores ``sha256(prev_hash + body)``, so an
edited or deleted event breaks every later link (``verify_chain``, ``muxi-isolation audit
verify``). On PostgreSQL the app role may only append, through a ``SECURITY DEFINER``
function; it can neither read, change nor delete an event. With OpenTelemetry installed,
each event is also added to the current span.
"""

from __future__ import annotations

from ._auditor import NO_AUDIT, Auditor, DatabaseSink, LogSink, OtelSink, acting
from ._auditor import Sink as Sink  # the protocol a sink meets (not pinned in __all__)
from ._events import (
    DENIED,
    DROPPED,
    GENESIS,
    MISSING,
    OK,
    OUTCOMES,
    AuditEvent,
    AuditQuery,
    ChainBreak,
    EventList,
    chain_hash,
    verify_chain,
)
from ._hooks import guard, instrument, note_dropped, probing, recorded, refusal
from ._trail import aread_events, heads, prune, read_events, verify

__all__ = [
    "DENIED",
    "DROPPED",
    "GENESIS",
    "MISSING",
    "NO_AUDIT",
    "OK",
    "OUTCOMES",
    "AuditEvent",
    "AuditQuery",
    "Auditor",
    "ChainBreak",
    "DatabaseSink",
    "EventList",
    "LogSink",
    "OtelSink",
    "acting",
    "aread_events",
    "chain_hash",
    "guard",
    "heads",
    "instrument",
    "note_dropped",
    "probing",
    "prune",
    "read_events",
    "recorded",
    "refusal",
    "verify",
    "verify_chain",
]
