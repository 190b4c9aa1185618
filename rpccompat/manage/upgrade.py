"""``upgrade check``: is it safe to go on, on oslo.upgradecheck.

Each check answers one question of the mixed period.  Warnings are what an
operator should look at but that do not stop an upgrade (pins held back while
old nodes run is the normal mixed period); a failure stops it: the contract
is blocked, MySQL would refuse the sync triggers, or the code and the
database disagree about their history.

Exit codes (oslo.upgradecheck's): 0 success, 1 warnings, 2 failure, 255 the
checks could not run (e.g. the database is unreachable); 127 bad input.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import SimpleNamespace

from oslo_upgradecheck import upgradecheck
from oslo_upgradecheck.upgradecheck import Code, Result

from rpccompat.db import Check, Status
from rpccompat.db.backends import backend
from rpccompat.exceptions import MigrationError, UnknownRelease
from rpccompat.manage.base import Context, error_exit, json_flag
from rpccompat.manage.service import Survey, survey

CHECKS_FAILED_TO_RUN = 255  # oslo.upgradecheck's code: not a check's result


def _guarded(check: Callable[[Checks], Result]) -> Callable[[Checks], Result]:
    """A tree the database does not match fails its check, not the command:
    the other checks still say what they know."""

    @functools.wraps(check)
    def guarded(self: Checks) -> Result:
        try:
            return check(self)
        except MigrationError as e:
            return Result(Code.FAILURE, e.render(self.context.prog))

    return guarded


def _result(code: Code, lines: list[str], otherwise: str) -> Result:
    return Result(code, "; ".join(lines)) if lines else Result(Code.SUCCESS, otherwise)


class Checks(upgradecheck.UpgradeCommands):
    def __init__(self, context: Context) -> None:
        self.context = context
        # Titled after the tool the commands are mounted in.
        self.display_title = f"{context.prog} upgrade check"

    # Read once per run and shared by the checks that need them.
    @functools.cached_property
    def survey(self) -> Survey:
        return survey(self.context)

    @functools.cached_property
    def status(self) -> Status:
        return self.context.database.status()

    @_guarded
    def _services_down_but_counted(self) -> Result:
        late = [
            f"{v.service.name} ({v.service.release}): no heartbeat for "
            f"{v.silent_for:.0f} s"
            for v in self.survey.services
            if v.counted and not v.up
        ]
        return _result(
            Code.WARNING,
            late
            + (["until service_down_time passes they still count"] if late else []),
            "every service that counts towards the pins is up",
        )

    @_guarded
    def _pins_held(self) -> Result:
        history = self.context.history
        if history is None:
            return Result(
                Code.WARNING, "no history: list the service's tree in migration_trees"
            )
        held = [
            pin.describe()
            for pin in self.survey.pins.values()
            if pin.release != history.current.name
        ]
        return _result(Code.WARNING, held, f"every pin is at {history.current.name}")

    @_guarded
    def _data_migrations(self) -> Result:
        prog, pending = self.context.prog, self.status.pending_migrations
        expanded = self.status.code != Check.EXPAND_NEEDED
        todo = (
            f"{prog} db migrate" if expanded else f"{prog} db expand, then db migrate"
        )
        return _result(
            Code.WARNING,
            [f"{name} has rows left" for name in pending]
            + ([f"run {todo}"] if pending else []),
            "every data migration is complete",
        )

    @_guarded
    def _contract_readiness(self) -> Result:
        status, prog = self.status, self.context.prog
        if status.code == Check.CONTRACT_BLOCKED:
            return Result(
                Code.FAILURE,
                "contract is blocked: "
                + "; ".join(b.render(prog) for b in status.blockers),
            )
        if status.code in (Check.EXPAND_NEEDED, Check.MIGRATIONS_PENDING):
            return Result(
                Code.WARNING,
                "not yet: " + "; ".join(b.render(prog) for b in status.blockers),
            )
        if status.code == Check.CONTRACT_NEEDED:
            return Result(Code.SUCCESS, f"contract is allowed: {prog} db contract")
        return Result(Code.SUCCESS, "nothing to contract: the database is up to date")

    @_guarded
    def _trigger_privileges(self) -> Result:
        database = self.context.database
        refusal = database.expand_refusal()
        if refusal is not None:
            return Result(Code.FAILURE, refusal)
        with database.engine.connect() as conn:
            later = backend(database.engine).trigger_refusal(conn)
        if later is not None:
            return Result(Code.WARNING, f"no pending expand needs it, but: {later}")
        return Result(Code.SUCCESS, "sync triggers can be created")

    @_guarded
    def _history_consistency(self) -> Result:
        problems = [p for tree in self.context.database.trees for p in tree.problems()]
        try:
            self.status  # noqa: B018 - raises if the database is ahead of the code
        except MigrationError as e:
            problems.append(str(e))
        problems += self.survey.too_old()
        if problems:
            return Result(Code.FAILURE, "; ".join(problems))
        history = self.context.history
        unknown = []
        if history is not None:
            for view in self.survey.services:
                try:
                    history.index(view.service.release)
                except UnknownRelease:
                    unknown.append(
                        f"{view.service.name} runs unknown {view.service.release!r}"
                    )
        return _result(Code.WARNING, unknown, "trees, head files and releases agree")

    _upgrade_checks = (
        ("Services down but counted", _services_down_but_counted),
        ("Pins held below the newest release", _pins_held),
        ("Data migrations", _data_migrations),
        ("Contract readiness", _contract_readiness),
        ("Trigger privileges", _trigger_privileges),
        ("History consistency", _history_consistency),
    )


class UpgradeCommands:
    """Upgrade readiness, on oslo.upgradecheck."""

    def __init__(self, context: Context) -> None:
        self.context = context

    @error_exit(CHECKS_FAILED_TO_RUN)
    @json_flag
    def check(self, json: bool = False) -> int:
        """Every readiness check, as a table titled after the tool.

        Exit codes (oslo.upgradecheck's): 0 every check succeeded; 1
        warnings: worth a look, not a stop; 2 a failure: the contract is
        blocked, MySQL would refuse the sync triggers, or the code and the
        database disagree about their history; 255 the checks could not run
        (the database is unreachable).
        """
        # oslo.upgradecheck reads the flag from its module's CONF.command.json.
        flag = SimpleNamespace(command=SimpleNamespace(json=json))
        upgradecheck.CONF = flag  # type: ignore[assignment]  # all it reads
        return int(Checks(self.context).check())
