"""MySQL and MariaDB: DDL committed statement by statement,
``lock_wait_timeout``, ``ALGORITHM=INSTANT``/``INPLACE, LOCK=NONE``, and
triggers that may not write back to the table that fired them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from rpccompat.db.backends.base import Backend

if TYPE_CHECKING:
    from rpccompat.db.sync import ColumnSync, Renderer

LOCK_WAIT_TIMEOUT = 1205
ALGORITHM_UNSUPPORTED = {1845, 1846}  # the ALGORITHM or LOCK asked for
ONLINE = "ALGORITHM=INPLACE, LOCK=NONE"


class MySQL(Backend):
    name = "mysql"
    identifier_limit = 64  # longer names are refused
    is_not_distinct = "<=>"
    session = "thread"
    oldest_transactions = (
        "SELECT trx_mysql_thread_id, trx_state, TIMEDIFF(NOW(), trx_started) "
        "FROM information_schema.innodb_trx "
        "WHERE trx_mysql_thread_id <> CONNECTION_ID() ORDER BY trx_started LIMIT 5"
    )
    triggers_on = (
        "SELECT trigger_name FROM information_schema.triggers "
        "WHERE event_object_schema = DATABASE() AND event_object_table = :table"
    )
    blocking_ddl = (
        (
            r"^ALTER TABLE (?!.*ALGORITHM\s*=\s*INSTANT)"
            r"(?!.*ALGORITHM\s*=\s*INPLACE.*LOCK\s*=\s*NONE)",
            "ALTER without ALGORITHM=INSTANT or INPLACE, LOCK=NONE",
        ),
        (
            r"^(CREATE|DROP) (UNIQUE )?INDEX (?!.*LOCK\s*=\s*NONE)",
            "index change without LOCK=NONE",
        ),
    )
    # A row the backfill converts is read as committed now, not as the
    # snapshot of REPEATABLE READ.
    backfill_isolation = "READ COMMITTED"
    #: Under REPEATABLE READ an UPDATE the optimizer runs as a scan keeps a
    #: lock on every row it reads, out of order with those the caller holds.
    updates_only_its_rows = False
    #: Error 1442.  A move's triggers write back only rows out of step, but
    #: a statement reading the old table meets one when a concurrent write
    #: lands between its read and its trigger.
    triggers_write_tables_in_use = False

    def lock_timeout(self, seconds: float) -> str | None:
        # Whole seconds, rounded down: under one it does not wait at all
        # (NOWAIT) and the retries do the waiting.
        return f"SET SESSION lock_wait_timeout = {math.floor(seconds)}"

    def is_lock_timeout(self, error: sa.exc.DBAPIError) -> bool:
        return _code(error) == LOCK_WAIT_TIMEOUT

    def attempt(
        self, conn: sa.Connection, statements: Sequence[str], lock_timeout: float
    ) -> None:
        conn.exec_driver_sql(self.lock_timeout(lock_timeout) or "")
        try:
            super().attempt(conn, statements, lock_timeout)
        finally:
            conn.exec_driver_sql("SET SESSION lock_wait_timeout = DEFAULT")

    def online_alters(self, statement: str) -> list[str]:
        return [f"{statement}, ALGORITHM=INSTANT", f"{statement}, {ONLINE}"]

    def is_unsupported_plan(self, error: sa.exc.DBAPIError) -> bool:
        return _code(error) in ALGORITHM_UNSUPPORTED

    def relax_not_null(self, table: str, column: str, existing: Any) -> str:
        """The column restated as reflected (type, collation, default,
        comment), but NULL."""
        q = self.quote
        if existing is None:  # offline: the lint reads only the statement's shape
            spec = f"{q(column)} <existing type> NULL"
        else:
            spec = f"{q(column)} {existing['type'].compile(self.dialect)} NULL"
            if existing.get("default") is not None:
                spec += f" DEFAULT {existing['default']}"
            if existing.get("comment"):
                comment = sa.literal(existing["comment"]).compile(
                    dialect=self.dialect, compile_kwargs={"literal_binds": True}
                )
                spec += f" COMMENT {comment}"
        return f"ALTER TABLE {q(table)} MODIFY COLUMN {spec}"

    def create_index(
        self, name: str, table: str, columns: Sequence[str], unique: bool
    ) -> str:
        kind = "UNIQUE INDEX" if unique else "INDEX"
        cols = ", ".join(self.quote(c) for c in columns)
        return (
            f"ALTER TABLE {self.quote(table)} ADD {kind} {self.quote(name)} "
            f"({cols}), {ONLINE}"
        )

    def drop_index(self, name: str, table: str) -> str:
        return (
            f"ALTER TABLE {self.quote(table)} DROP INDEX {self.quote(name)}, {ONLINE}"
        )

    def unchecked_foreign_key(
        self, name: str, constraint: str
    ) -> tuple[list[str], str, list[str]]:
        # With foreign_key_checks off, the only way in place.
        return (
            ["SET SESSION foreign_key_checks = 0"],
            f"{constraint}, {ONLINE}",
            ["SET SESSION foreign_key_checks = 1"],
        )

    # -- triggers: one BEFORE trigger per event, SET NEW -----------------------------

    def column_sync_suffixes(self) -> tuple[str, ...]:
        return ("_ins", "_upd")

    def column_sync(self, sync: ColumnSync, r: Renderer) -> dict[str, list[str]]:
        set_new = "SET " + r.assign("NEW.", sync.new_values, "=", ", ")
        set_old = "SET " + r.assign("NEW.", sync.old_values, "=", ", ")
        refuse = f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = {r.text(sync.refusal())}"
        statements = {}
        for trigger, event in zip(
            sync.trigger_names(self.name), ("INSERT", "UPDATE"), strict=True
        ):
            both, old, new = sync.conditions(r, event)
            statements[trigger] = [
                f"CREATE TRIGGER {r.q(trigger)} BEFORE {event} ON {r.q(sync.table)} "
                f"FOR EACH ROW BEGIN\n"
                f"  IF NOT {r.agree(sync)} THEN\n"
                f"    IF {both} THEN {refuse};\n"
                f"    ELSEIF {old} THEN {set_new};\n"
                f"    ELSEIF {new} THEN {set_old};\n"
                "    END IF;\n  END IF;\nEND"
            ]
        return statements

    def after_trigger(
        self, name: str, event: str, table: str, when: str, action: str
    ) -> list[str]:
        return [
            f"CREATE TRIGGER {self.quote(name)} AFTER {event} ON {self.quote(table)} "
            f"FOR EACH ROW BEGIN\n  IF {when} THEN {action}; END IF;\nEND"
        ]

    def upsert(self, insert: str, key: str, sets: Sequence[tuple[str, str]]) -> str:
        assignments = ", ".join(f"{self.quote(c)} = {v}" for c, v in sets)
        return f"{insert} ON DUPLICATE KEY UPDATE {assignments}"

    def insert_ignoring(self, table: sa.TableClause, key: str) -> Any:
        # IGNORE also turns a foreign key's refusal (the row deleted
        # meanwhile) into a warning.
        return sa.insert(table).prefix_with("IGNORE")

    def trigger_refusal(self, conn: sa.Connection) -> str | None:
        """With binary logging on, creating a trigger needs SUPER unless
        ``log_bin_trust_function_creators`` is set."""
        log_bin, trusted, user = conn.exec_driver_sql(
            "SELECT @@log_bin, @@log_bin_trust_function_creators, CURRENT_USER()"
        ).one()
        grants = " ".join(row[0] for row in conn.exec_driver_sql("SHOW GRANTS"))
        has_super = "ALL PRIVILEGES ON *.*" in grants or "SUPER" in grants
        return trigger_refusal(bool(int(log_bin)), bool(int(trusted)), has_super, user)


def _code(error: sa.exc.DBAPIError) -> Any:
    """The server's error number, first of the driver's error's args."""
    args: tuple[Any, ...] = getattr(error.orig, "args", ())
    return args[0] if args else None


def trigger_refusal(
    log_bin: bool, trusted: bool, has_super: bool, user: str
) -> str | None:
    if not log_bin or trusted or has_super:
        return None
    return (
        f"expand needs to create sync triggers but MySQL/MariaDB will refuse: "
        f"binary logging is on and {user} has no SUPER privilege; set "
        "log_bin_trust_function_creators=1 (SET GLOBAL, and in my.cnf) or grant "
        "SUPER, then run expand again"
    )
