"""``db expand|migrate|contract|version|check|sync|lint|online_data_migrations``.

Exit codes (DESIGN section 6):

- ``db check``: 0 up to date, 3 expand needed, 4 data migrations pending,
  5 contract needed and allowed, 6 contract needed but blocked by services.
- ``db contract``: 0 applied; refused: the ``db check`` code that says why
  (3, 4 or 6), with every blocker and the command that clears it.
- ``db migrate`` and ``db online_data_migrations``: 0 all done, 1 progress
  made and more to do, 2 errors (a server unreachable too), 127 bad input
  (Nova and Cinder's codes).
- ``db lint``: 0 clean, 1 findings that are not declared exceptions.
- every other command: 1 an error (server unreachable, DDL lock not
  granted), 127 bad input.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import prettytable

from rpccompat.db import Check, Status, Throttle, data, lint
from rpccompat.db.backends import DIALECTS
from rpccompat.db.ddl import LOCK_TIMEOUT, MAX_LOCK_TIMEOUT, check_lock_timeout
from rpccompat.db.tree import CONTRACT, EXPAND, FRAMEWORK, MigrationTree
from rpccompat.exceptions import ContractRefused, UnknownRelease
from rpccompat.manage.base import (
    BAD_INPUT,
    ERROR,
    OK,
    CommandError,
    Context,
    args,
    combine,
    error_exit,
    json_flag,
    print_json,
)

ddl_flags = combine(
    args(
        "--lock-timeout",
        type=float,
        help="the longest each DDL statement waits for its lock before it "
        f"gives way and retries: seconds, more than 0, at most {MAX_LOCK_TIMEOUT:g} "
        f"(default {LOCK_TIMEOUT:g}); MySQL/MariaDB wait the whole seconds in it",
    ),
    args(
        "--retry-budget",
        type=float,
        help="seconds a statement keeps retrying before giving up (default 60)",
    ),
)
throttle_flags = combine(
    args("--batch-size", type=int, default=1000, help="rows per batch"),
    args(
        "--target-time",
        type=float,
        help="seconds a batch should hold its row locks (a backfill's, from "
        "its UPDATE to its commit); the batch size follows it",
    ),
    args("--pause", type=float, default=0.0, help="seconds between batches"),
)


def _ddl_settings(lock_timeout: float | None, retry_budget: float | None) -> dict:
    if lock_timeout is not None:
        try:
            check_lock_timeout(lock_timeout)
        except ValueError as e:
            raise CommandError(f"--lock-timeout {e}", BAD_INPUT) from e
    given = {"lock_timeout": lock_timeout, "retry_budget": retry_budget}
    return {name: value for name, value in given.items() if value is not None}


NEXT_STEP = {
    Check.UP_TO_DATE: "the database is up to date",
    Check.EXPAND_NEEDED: "expand needed: {prog} db expand (before the first new node)",
    Check.MIGRATIONS_PENDING: "data migrations pending: {prog} db migrate",
    Check.CONTRACT_NEEDED: "contract needed and allowed: {prog} db contract",
    Check.CONTRACT_BLOCKED: "contract needed but blocked by services",
}


def totals_table(results: list[data.Totals]) -> prettytable.PrettyTable:
    """The table printed at the end of a run of data migrations."""
    table = prettytable.PrettyTable(
        ["Migration", "Release", "Found", "Done", "Batches", "Rows/s", "State"]
    )
    table.align = "l"
    for t in results:
        state = "complete" if t.complete else "more to do"
        table.add_row(
            [
                f"{t.tree}/{t.name}",
                t.release,
                t.found,
                t.done,
                t.batches,
                f"{t.rows_per_second:,.0f}",
                f"error: {t.error}" if t.error else state,
            ]
        )
    return table


def status_dict(status: Status, prog: str) -> dict[str, Any]:
    """``status`` for ``--json``; each blocker's command as ``prog`` runs it."""
    return {
        "code": int(status.code),
        "phase": status.phase,
        "versions": [
            {**dataclasses.asdict(v), "composite": v.composite} for v in status.versions
        ],
        "pending_migrations": status.pending_migrations,
        "blockers": [
            {**dataclasses.asdict(b), "command": b.command_line(prog)}
            for b in status.blockers
        ],
    }


class DbCommands:
    """The schema and data of an upgrade: expand, migrate, contract."""

    def __init__(self, context: Context) -> None:
        self.context = context

    @ddl_flags
    def expand(
        self, lock_timeout: float | None = None, retry_budget: float | None = None
    ) -> int:
        """Additive schema changes and sync triggers; safe while all serve.

        Exit codes: 0 expanded; 1 an error, among them MySQL/MariaDB refusing
        the sync triggers (found before anything changes) and a lock not
        granted within the retry budget.
        """
        self.context.database.expand(**_ddl_settings(lock_timeout, retry_budget))
        self._print_versions()
        print(
            f"expanded; next: start the new release's nodes, then "
            f"{self.context.prog} db migrate"
        )
        return OK

    @error_exit(data.ERRORS)
    @throttle_flags
    @json_flag
    def migrate(
        self,
        batch_size: int = 1000,
        target_time: float | None = None,
        pause: float = 0.0,
        json: bool = False,
    ) -> int:
        """Run every online data migration, of every release, until done.

        Exit codes (Nova's and Cinder's): 0 every data migration is complete;
        1 progress made, more to do (run it again); 2 errors: a migration
        failed (even beside progress), the schema is not expanded yet, or the
        database is unreachable; 127 bad input (--batch-size 0).
        """
        return self._migrate(None, Throttle(batch_size, pause, target_time), json)

    @error_exit(data.ERRORS)
    @args("--max-count", type=int, help="rows to look at in this pass")
    @throttle_flags
    @json_flag
    def online_data_migrations(
        self,
        max_count: int | None = None,
        batch_size: int = 1000,
        target_time: float | None = None,
        pause: float = 0.0,
        json: bool = False,
    ) -> int:
        """One pass of the online data migrations, for cron or a loop.

        Exit codes: 0 every data migration is complete; 1 progress made,
        more to do (with --max-count, even when a migration failed beside
        the progress: running again helps); 2 errors with no progress, or
        the database is unreachable; 127 bad input (--max-count 0).
        """
        if max_count is not None and max_count < 1:
            raise CommandError(
                f"--max-count must be at least 1, not {max_count}", BAD_INPUT
            )
        return self._migrate(max_count, Throttle(batch_size, pause, target_time), json)

    def _migrate(self, max_count: int | None, throttle: Throttle, json: bool) -> int:
        if throttle.batch_size < 1:
            raise CommandError("--batch-size must be at least 1", BAD_INPUT)
        results = self.context.database.migrate(
            max_count=max_count, throttle=throttle, progress=data.ProgressLines()
        )
        code = data.exit_code(results, limited=max_count is not None)
        if json:
            print_json(
                {"code": code, "migrations": [dataclasses.asdict(t) for t in results]}
            )
        else:
            print(totals_table(results))
        return code

    @ddl_flags
    def contract(
        self, lock_timeout: float | None = None, retry_budget: float | None = None
    ) -> int:
        """Drop what the old release used; refused while anything needs it.

        Exit codes: 0 contracted; refused: the db check code of the first
        blocker to clear, 3 expand not applied, 4 data migrations left, 6
        services of an older release still counted or not removed; 1 an
        error (a lock not granted: run it again).
        """
        try:
            self.context.database.contract(**_ddl_settings(lock_timeout, retry_budget))
        except ContractRefused as refused:
            return self._refused(refused)
        self._print_versions()
        print("contracted; the upgrade is complete")
        return OK

    def _refused(self, refused: ContractRefused) -> int:
        """The blockers on stderr; the code of the first one to clear."""
        print(f"contract refused: {len(refused.blockers)} blocker(s):", file=sys.stderr)
        for blocker in refused.blockers:
            print(f"  - {blocker.render(self.context.prog)}", file=sys.stderr)
        return min(blocker.code for blocker in refused.blockers)

    @json_flag
    def version(self, json: bool = False) -> int:
        """The composite version (expand, contract) of each tree, and the phase.

        Exit codes: 0 shown.
        """
        status = self.context.database.status()
        if json:
            print_json(status_dict(status, self.context.prog))
            return OK
        self._print_versions(status)
        print(f"phase: {status.phase or '-'} ({self._next_step(status)})")
        return OK

    @json_flag
    def check(self, json: bool = False) -> int:
        """What is safe next, as an exit code a script can act on.

        Exit codes (Glance's 3, 4 and 5, and 6): 0 up to date; 3 expand
        needed; 4 data migrations pending; 5 contract needed and allowed; 6
        contract needed but blocked by services.
        """
        status = self.context.database.status()
        if json:
            print_json(status_dict(status, self.context.prog))
            return status.code
        print(self._next_step(status))
        for name in status.pending_migrations:
            print(f"  - data migration {name} has rows left")
        if status.code == Check.CONTRACT_BLOCKED:
            for blocker in status.blockers:
                print(f"  - {blocker.render(self.context.prog)}")
        return status.code

    @ddl_flags
    def sync(
        self, lock_timeout: float | None = None, retry_budget: float | None = None
    ) -> int:
        """The offline path: expand, migrate, contract, with every service stopped
        (a new deployment, or a cold upgrade); no sync triggers.

        Exit codes: 0 synced; 6 refused before any change: a service of an
        older release is still up; 1 a data migration failed: the totals
        table says which and why, and nothing was contracted; 4 data
        migrations left with rows to do (run db migrate).
        """
        try:
            results = self.context.database.sync(
                **_ddl_settings(lock_timeout, retry_budget)
            )
        except ContractRefused as refused:
            return self._refused(refused)
        if any(t.error for t in results):
            print(totals_table(results))
            return ERROR
        self._print_versions()
        print("synced")
        return OK

    @args(
        "--dialect",
        action="append",
        choices=DIALECTS,
        help=f"backend to check: {', '.join(DIALECTS)} (repeatable; default: all)",
    )
    @json_flag
    def lint(self, dialect: list[str] | None = None, json: bool = False) -> int:
        """Check every revision: no drop in expand, no create in contract, no
        DDL that blocks writers on the backend; and the tree's head files.

        Exit codes: 0 clean; 1 findings that are not declared exceptions, or
        a tree problem (a head file that does not name its head, a revision
        without its release).
        """
        trees = [FRAMEWORK, *self.context.trees]
        findings = [f for t in trees for f in lint.lint(t, dialect or DIALECTS)]
        problems = [p for t in trees for p in t.problems()]
        errors = lint.errors(findings)
        if json:
            print_json(
                {
                    "findings": [dataclasses.asdict(f) for f in findings],
                    "problems": problems,
                }
            )
        else:
            for line in [*problems, *map(str, findings)]:
                print(line)
            print(
                f"{len(errors)} error(s), "
                f"{len(findings) - len(errors)} allowed, "
                f"{len(problems)} tree problem(s) in {len(trees)} tree(s)"
            )
        return ERROR if errors or problems else OK

    @args("--message", "-m", required=True, help="what it does: its first line")
    @args("--expand", action="store_true", help="a revision of the expand branch")
    @args("--contract", action="store_true", help="a revision of the contract branch")
    @args(
        "--release",
        help="the release it serves (expand) or requires (contract); "
        "default: the history's newest",
    )
    @args("--tree", help="the migration tree, when several are configured")
    @json_flag
    def revision(
        self,
        message: str,
        expand: bool = False,
        contract: bool = False,
        release: str | None = None,
        tree: str | None = None,
        json: bool = False,
    ) -> int:
        """Scaffold the next revision of a branch and record it as the head.

        It follows the branch's head (a contract revision depends on the
        expand head too), names its release, and is written into the tree's
        versions folder; EXPAND_HEAD or CONTRACT_HEAD is updated with it.

        Exit codes: 0 written; 127 neither or both of --expand and
        --contract, an unknown --release, or a --tree that is not configured
        (or none given with several); 1 the head files do not name the heads.
        """
        if expand == contract:
            raise CommandError(
                "db revision: give one of --expand and --contract", BAD_INPUT
            )
        branch = EXPAND if expand else CONTRACT
        try:
            path = self._tree(tree).new_revision(branch, message, release)
        except UnknownRelease as e:
            raise CommandError(f"db revision: {e}", BAD_INPUT) from e
        if json:
            print_json({"branch": branch, "path": str(path)})
        else:
            print(f"{branch} revision written to {path}")
        return OK

    def _tree(self, name: str | None) -> MigrationTree:
        trees = {t.name: t for t in self.context.trees}
        if name is None and len(trees) == 1:
            return next(iter(trees.values()))
        if name in trees:
            return trees[name]
        known = ", ".join(trees) or "none: set [database] migration_trees"
        raise CommandError(
            f"db revision: name the tree with --tree (configured: {known})", BAD_INPUT
        )

    def _print_versions(self, status: Status | None = None) -> None:
        database = self.context.database
        versions = status.versions if status is not None else database.versions()
        table = prettytable.PrettyTable(
            ["Tree", "Expand", "Expand Head", "Contract", "Contract Head"]
        )
        table.align = "l"
        for v in versions:
            table.add_row(
                [
                    v.tree,
                    v.expand or "base",
                    v.expand_head,
                    v.contract or "base",
                    v.contract_head,
                ]
            )
        print(table)

    def _next_step(self, status: Status) -> str:
        prog = self.context.prog
        if all(v.expand is None and v.contract is None for v in status.versions):
            return f"empty database: {prog} db sync installs it (or db expand)"
        return NEXT_STEP[status.code].format(prog=prog)
