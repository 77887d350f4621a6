"""Creating or upgrading the tables on first use, as their owner: the schema they live in,
the recorded embedding precision and dimension, the scope key, and the role's probe."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Connection, text

from ...audit import instrument
from ...errors import ConfigError
from ...records import Memory
from . import _dimension, _errors, _rls
from ._ann_index import shared_index
from ._ops import Ops
from ._probe import Probe, probe_role
from ._schema import Tables, install, replace_schema, with_dimension
from ._scope_key import read_scope_key
from ._transactions import Transactions
from ._vectors import VectorPlanner

__all__ = ["Installing"]

log = logging.getLogger("muxi_isolation.stores.sql")


class Installing(Transactions):
    """The tables made ready once, before the first call (``setup``)."""

    vectors: VectorPlanner
    _ops: Ops
    _dimension: int | str | None  # as configured

    def _not_installed(self) -> None:
        self._ready = False
        self._install_lock = threading.Lock()
        self._rls: bool = False

    def setup(self) -> None:
        """Create or upgrade the tables now (otherwise done on first use)."""
        if self._ready:
            return
        with self._install_lock:
            if self._ready:
                return
            with self._gate.hold(), _errors.mapped():
                with _errors.unavailable():
                    conn = self._engine.connect()
                with conn:
                    probe = probe_role(conn)
            with self._as_owner() as conn:
                self._place(conn)
                install(conn, self.tables, app_role=probe.role if self._admin else None)
                self._sized(conn)
                key = read_scope_key(conn, self.tables)
            self._installed(probe, key)

    async def asetup(self) -> None:
        if self._ready:
            return
        async with self._gate.ahold():
            with _errors.mapped():
                with _errors.unavailable():
                    conn = await self._aengine.connect().start()
                try:
                    probe = await conn.run_sync(probe_role)
                finally:
                    await conn.close()
                owner = self._admin[1] if self._admin else self._writers[1]
                with _errors.unavailable():
                    conn = await owner.connect().start()
                try:
                    await conn.execution_options(muxi_write=True)
                    async with conn.begin():
                        await conn.run_sync(self._place)
                        app_role = probe.role if self._admin else None
                        await conn.run_sync(install, self.tables, app_role=app_role)
                        await conn.run_sync(self._sized)
                        key = await conn.run_sync(read_scope_key, self.tables)
                finally:
                    await conn.close()
        self._installed(probe, key)

    def _place(self, conn: Connection) -> None:
        """Name the schema of every table: PostgreSQL and SQLite look unqualified names up
        in the connection's temporary schema first, where a table of the same name could be
        planted. Without ``schema=`` the tables live where the owner's connection makes them
        (PostgreSQL's ``current_schema()``, SQLite's ``main``), and every statement names
        that schema from now on."""
        if self.tables.metadata.schema is None:
            postgres = self.dialect == "postgresql"
            schema = str(conn.scalar(text("SELECT current_schema()"))) if postgres else "main"
            self._use(replace_schema(self.tables, schema))
        if self.dialect == "postgresql":
            self._enter_statement = _rls.enter_statement(conn, self.tables)

    def _use(self, tables: Tables) -> None:
        """Swap in ``tables`` (placed, or with a dimension) everywhere they are read."""
        self.tables = tables
        self._ops.t = tables
        self.vectors.tables = tables
        self.__dict__.pop("_graph_ops", None)  # rebuilt from these tables

    def _sized(self, conn: Connection) -> None:
        """After install, as the owner: agree with the recorded embedding precision and
        dimension."""
        held = _dimension.read_precision(conn, self.tables)
        if held is not None and held != self.tables.precision:
            raise ConfigError(
                f"the store holds {held}-precision embeddings "
                f"({'HALFVEC' if held == 'half' else 'VECTOR'}); the configuration says "
                f"{self.tables.precision}: configure embedding_precision: {held}"
            )
        stored = _dimension.read_dimension(conn, self.tables)
        wanted = self._dimension
        if isinstance(wanted, int):
            if stored is None:
                stored = _dimension.fix_dimension(conn, self.tables, wanted)
            if stored != wanted:
                raise ConfigError(
                    f"the store holds {stored}-dimension embeddings; the configuration says "
                    f"{wanted}: {_dimension.change_hint(wanted)}, or configure "
                    f"embedding_dimension: auto (or {stored})"
                )
        if wanted == _dimension.AUTO and stored is not None:
            self._use(with_dimension(self.tables, stored))
        if self.dialect == "postgresql":  # a store made before per-user indexes keeps its own
            self.vectors.shared = shared_index(conn, self.tables)

    def _fix_dimension(self, memories: list[Memory]) -> None:
        """``"auto"``: the first vector written fixes the dimension (as the owner)."""
        sent = next((len(m.embedding) for m in memories if m.embedding is not None), None)
        if sent is None or self._dimension != _dimension.AUTO or self.tables.dimension:
            return
        with self._as_owner() as conn:
            stored = _dimension.fix_dimension(conn, self.tables, sent)
        self._use(with_dimension(self.tables, stored))

    def set_embedding_dimension(self, dimension: int, *, clear: bool = False) -> int:
        """Change the memories' embedding dimension (as the owner); stored vectors must be
        dropped (``clear=True``) and embedded again. Returns how many were dropped."""
        self.setup()
        with self._as_owner() as conn:
            dropped = _dimension.set_dimension(conn, self.tables, dimension, clear=clear)
        self._dimension = dimension if isinstance(self._dimension, int) else self._dimension
        self._use(with_dimension(self.tables, dimension))
        return dropped

    def embedding_dimension(self) -> int | None:
        """The recorded dimension (``None``: not fixed yet, or any length)."""
        self.setup()
        return self.tables.dimension

    def _installed(self, probe: Probe, key: bytes | None) -> None:
        self._scope_key = key
        self._rls = self.dialect == "postgresql" and not probe.bypass
        if self.dialect == "postgresql":
            if probe.bypass:
                log.warning("the app's database role bypasses row-level security (superuser?)")
            for warning in probe.warnings(owner=self._admin is not None):
                log.warning(warning)
        self._ready = True

    def rotate_scope_key(self, *, finish: bool = False) -> int:
        """Rotate the key that signs the row-level-security scope, without downtime.

        ``finish=False`` adds a new key: every backend signs with it from its next start,
        and the older keys stay valid meanwhile. ``finish=True`` drops every older key; a
        backend still holding one is refused once, reads the new key and retries, so its
        callers see nothing. Returns the new key's number, or how many keys were dropped.
        Needs the owner (``admin_url``).
        """
        if self.dialect != "postgresql":
            raise ConfigError("the scope key signs PostgreSQL's row-level security only")
        self.setup()
        with self._as_owner() as conn:
            change = _rls.drop_old_scope_keys if finish else _rls.add_scope_key
            result = change(conn, self.tables)
        self._refresh_key()
        return result

    def rls_enforced(self) -> bool:
        """Whether PostgreSQL row-level security applies to the app's role."""
        self.setup()
        return self._rls


instrument(Installing, admin=["rotate_scope_key"])  # an admin act: audited like the others
