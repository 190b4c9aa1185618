"""SQLite: one writer at a time, no ALTER COLUMN, AFTER triggers that
update the row again (and so fire each other)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from rpccompat.db.backends.base import REBUILD, Backend

if TYPE_CHECKING:
    from rpccompat.db.sync import ColumnSync, Renderer

COLUMN_SYNC = ("ins_new", "ins_old", "upd_new", "upd_old")


class SQLite(Backend):
    name = "sqlite"
    is_not_distinct = "IS"
    triggers_on = (
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :table"
    )
    blocking_ddl = (
        (rf"^CREATE TABLE {REBUILD}", "table rebuilt by copying (batch mode)"),
    )
    alters_columns = False

    def column_sync_suffixes(self) -> tuple[str, ...]:
        return tuple(f"_{n}" for n in COLUMN_SYNC)

    def column_sync(self, sync: ColumnSync, r: Renderer) -> dict[str, list[str]]:
        # SQLite cannot assign NEW in a trigger: AFTER triggers update the
        # row again.  recursive_triggers off stops a trigger firing itself,
        # not another: the UPDATE of ins_new fires upd_old.  Each trigger
        # fires only while the shapes disagree, and its UPDATE makes them
        # agree, so the trigger it fires does nothing.  A refusal is a
        # RAISE in the trigger of the first shape, which aborts the statement.
        table, key = r.q(sync.table), r.q(sync.key)
        where = f"WHERE {key} = NEW.{key}"
        set_new = f"UPDATE {table} SET {r.assign('', sync.new_values, '=', ', ')}"
        set_old = f"UPDATE {table} SET {r.assign('', sync.old_values, '=', ', ')}"
        refuse = f"SELECT RAISE(ABORT, {r.text(sync.refusal())})"
        statements = {}
        fitted = sync.trigger_names(self.name)
        for name, trigger in zip(COLUMN_SYNC, fitted, strict=True):
            event = "INSERT" if name.startswith("ins") else "UPDATE"
            both, old, new = sync.conditions(r, event)
            if name.endswith("new"):  # the old shape was written
                when, action = old, f"{refuse} WHERE {both}; {set_new} {where};"
            else:
                when, action = f"{new} AND NOT {old}", f"{set_old} {where};"
            statements[trigger] = [
                f"CREATE TRIGGER {r.q(trigger)} AFTER {event} ON "
                f"{table} FOR EACH ROW WHEN {when} AND NOT {r.agree(sync)}\n"
                f"BEGIN {action} END"
            ]
        return statements

    def after_trigger(
        self, name: str, event: str, table: str, when: str, action: str
    ) -> list[str]:
        return [
            f"CREATE TRIGGER {self.quote(name)} AFTER {event} ON {self.quote(table)} "
            f"FOR EACH ROW WHEN {when}\nBEGIN {action}; END"
        ]

    def insert_ignoring(self, table: sa.TableClause, key: str) -> Any:
        return sa.insert(table).prefix_with("OR IGNORE")
