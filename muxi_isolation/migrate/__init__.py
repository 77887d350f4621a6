"""Migration and the data lifecycle: move users' data in and out, forget it, expire it.

    run_import(source, backend, mapping)   import an unscoped store (``sources``), or an
                                           export, mapping each key to its owner
    export_user(backend, user, out)        a user's sessions, messages and memories as
                                           JSON Lines (``export_document``: one JSON object)
    forget_user / forget_tenant            delete every row, everywhere, with counts
    purge_expired(backend, retention)      drop sessions past ``expired_session_retention``

Each has an ``a``-prefixed async twin where a server needs one. The CLI
(``muxi-isolation import | export-user | forget-user | forget-tenant | purge-expired``) and
the server's admin endpoints call these functions. The core never imports a framework: the
sources that read LangChain or LlamaIndex formats load the adapters when they are used.
"""

from __future__ import annotations

from ..stores import open_configured_backend
from ._export import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    SECTIONS,
    Section,
    aexport_document,
    aexport_user,
    aiter_export,
    export_document,
    export_user,
    iter_export,
    register_section,
)
from ._forget import ForgetReport, aforget_tenant, aforget_user, forget_tenant, forget_user
from ._graph import GRAPH_SECTION  # registers LangGraph checkpoints and store items
from ._import import run_import
from ._progress import Progress
from ._purge import PurgeReport, apurge_expired, purge_expired, retention_cutoff
from ._report import ImportReport, Problem
from ._scopemap import ScopeMap, Skip, load_mapping, scope_mapper, to_scope
from ._units import Broken, Conversation, Extra, MemoryItem, Source

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "GRAPH_SECTION",
    "SECTIONS",
    "Broken",
    "Conversation",
    "Extra",
    "ForgetReport",
    "ImportReport",
    "MemoryItem",
    "Problem",
    "Progress",
    "PurgeReport",
    "ScopeMap",
    "Section",
    "Skip",
    "Source",
    "aexport_document",
    "aexport_user",
    "aforget_tenant",
    "aforget_user",
    "aiter_export",
    "apurge_expired",
    "export_document",
    "export_user",
    "forget_tenant",
    "forget_user",
    "iter_export",
    "load_mapping",
    "open_configured_backend",
    "purge_expired",
    "register_section",
    "retention_cutoff",
    "run_import",
    "scope_mapper",
    "to_scope",
]
