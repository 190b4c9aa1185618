"""An operator who gets the order wrong: the steps of an upgrade, at random.

Seeded random walks over ``rpccompat-manage db ...`` and node starts and
stops, in any order, mistakes included (contract first, a beta node before
expand, an alpha node after contract, migrate before expand, a command
interrupted by Ctrl-C at any statement, a command with no config), checked
step by step against a model of what each step must do: every command ends
with its documented code, a refusal is one line on stderr, a node the schema
does not serve refuses to start, and contract never completes while an alpha
node is running or rows wait for their migration.  At the end the upgrade is
finished in the right order and every row alpha wrote is read back by beta.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from typing import Any

import pytest
import sqlalchemy as sa

from rpccompat import guard
from rpccompat.db import Check
from rpccompat.exceptions import SchemaRefused
from rpccompat.manage import BAD_INPUT, Manage
from rpccompat.manage.cli import INTERRUPTED
from rpccompat_demo import beta
from rpccompat_demo.node import Node, Settings
from tests.db import insert_alpha_volumes
from tests.db.test_resumable import interrupting

SEEDED_ROWS = 5
STEPS = 30
WALKS = 2  # per backend; each walk has its own database
MAX_COUNT = 2


@dataclasses.dataclass
class Model:
    """What the database and the cluster are, as the operator's steps left them."""

    expanded: bool = False
    waiting_rows: int = SEEDED_ROWS  # rows alpha wrote before expand, unconverted
    contracted: bool = False
    contracting: bool = False  # a contract stopped part-way holds its state
    # An expand stopped after its last revision, before it told the guard:
    # beta nodes may be refused until an expand runs through.
    ceiling_recorded: bool = True
    nodes: list[Node] = dataclasses.field(default_factory=list)
    stopped: list[Node] = dataclasses.field(default_factory=list)  # rows kept

    @property
    def alpha_running(self) -> bool:
        return any(node.release == "alpha" for node in self.nodes)

    @property
    def alpha_rows(self) -> bool:
        """Rows of alpha nodes, running or stopped but not removed: until an
        operator removes it, a stopped node may come back."""
        return self.alpha_running or any(n.release == "alpha" for n in self.stopped)

    def check(self) -> set[int]:
        """The ``db check`` codes the state allows."""
        if self.contracted:
            return {Check.UP_TO_DATE}
        if not self.expanded:
            return {Check.EXPAND_NEEDED}
        if self.waiting_rows:
            return {Check.MIGRATIONS_PENDING}
        return {Check.CONTRACT_BLOCKED if self.alpha_rows else Check.CONTRACT_NEEDED}

    def contract_blockers(self) -> set[int]:
        """What refuses a contract: nothing once one has run through."""
        codes: set[int] = set()
        if self.contracted:
            return codes
        if not self.expanded:
            codes.add(Check.EXPAND_NEEDED)
        elif self.waiting_rows:
            codes.add(Check.MIGRATIONS_PENDING)
        if self.alpha_rows:
            codes.add(Check.CONTRACT_BLOCKED)
        return codes


class Walk:
    """One seeded walk: each step runs for real and is checked on the model."""

    def __init__(self, operator: Any, db_url: str, seed: int) -> None:
        self.operator, self.rng, self.seed = operator, random.Random(seed), seed
        self.settings = Settings(db_url=db_url, transport_url="kombu+memory:////")
        self.model = Model()
        self.hosts = (f"h{seed}-{n}" for n in itertools.count())
        self.done: list[str] = []
        self.cases = 0
        self.armed = False
        self.engine = sa.create_engine(db_url)

    def steps(self) -> dict[str, Any]:
        return {
            "db expand": self.expand,
            "db migrate": self.migrate,
            "db online_data_migrations": self.one_pass,
            "db contract": self.contract,
            "db sync": self.sync,
            "db check": self.check,
            "start alpha": lambda: self.start("alpha"),
            "start beta": lambda: self.start("beta"),
            "stop a node": self.stop,
            "service remove": self.remove,
            "interrupted db expand": lambda: self.interrupted(self.expand),
            "interrupted db contract": lambda: self.interrupted(self.contract),
            "no config": self.no_config,
        }

    def run(self, count: int) -> None:
        steps = self.steps()
        for _ in range(count):
            name = self.rng.choice(sorted(steps))
            self.done.append(name)
            steps[name]()
            self.cases += 1

    def command(self, *argv: str, codes: set[int]) -> int:
        """Run ``argv``; its code must be one of ``codes`` (or 130 while an
        interruption is armed).  An error (2) or an interruption is one line
        on stderr; nothing ends in a traceback."""
        run = self.operator(*argv)
        if self.armed:
            codes = codes | {INTERRUPTED}
        self.expect(run.code in codes, f"{' '.join(argv)} exited {run.code}", run)
        self.expect("Traceback" not in run.out + run.err, "a traceback", run)
        if run.code in (2, INTERRUPTED):
            lines = run.err.strip().splitlines()
            self.expect(len(lines) == 1, "an error not in one line", run)
        return run.code

    def expect(self, ok: bool, what: str, run: Any = None) -> None:
        if not ok:
            detail = f"\nstdout: {run.out}\nstderr: {run.err}" if run else ""
            pytest.fail(
                f"seed {self.seed}: {what}, after {' -> '.join(self.done)}{detail}"
            )

    # -- the steps ---------------------------------------------------------------

    def expand(self) -> None:
        code = self.command("db", "expand", codes={0})
        if code == 0:
            self.model.expanded, self.model.ceiling_recorded = True, True
        elif not self.model.expanded:  # stopped: ask where it got to
            expanded = self.operator("db", "check").code != Check.EXPAND_NEEDED
            self.model.expanded, self.model.ceiling_recorded = expanded, not expanded

    def migrate(self) -> None:
        done = self.command("db", "migrate", codes={0} if self.model.expanded else {2})
        if done == 0:
            self.model.waiting_rows = 0

    def one_pass(self) -> None:
        waiting = self.model.waiting_rows
        if not self.model.expanded:
            codes = {2}
        elif waiting > MAX_COUNT:
            codes = {1}
        else:
            codes = {0, 1} if waiting else {0}
        argv = ("db", "online_data_migrations", "--max-count", str(MAX_COUNT))
        if self.command(*argv, codes=codes) != 2:
            self.model.waiting_rows = max(0, waiting - MAX_COUNT)

    def contract(self) -> None:
        blockers = self.model.contract_blockers()
        code = self.command("db", "contract", codes=blockers or {0})
        if code == 0 and not self.model.contracted:
            self.expect(not self.model.alpha_rows, "contract with alpha rows")
            self.model.contracted, self.model.contracting = True, False
        elif code == INTERRUPTED:  # it may have taken its state, or not yet
            with self.engine.connect() as conn:
                state = guard.read(conn, beta.HISTORY.project)
            self.model.contracting = bool(state and state.contracting)

    def interrupted(self, step: Any) -> None:
        """``step`` with Ctrl-C before one of its first few changing statements."""
        self.armed = True
        try:
            with interrupting(after=self.rng.randrange(8)):
                step()
        finally:
            self.armed = False

    def no_config(self) -> None:
        """A command without a config names what is missing and changes nothing."""
        capsys = self.operator.capsys
        capsys.readouterr()
        command = self.rng.choice(["check", "expand", "contract", "sync"])
        code = Manage().main(["db", command])
        err = capsys.readouterr().err
        self.expect(code == BAD_INPUT, f"no config exited {code}: {err}")
        self.expect(len(err.strip().splitlines()) == 1, f"no config said: {err}")

    def sync(self) -> None:
        """The offline path (every service stopped): refused, changing
        nothing, while an alpha node runs; stopped rows do not hold it."""
        refused = {Check.CONTRACT_BLOCKED} if self.model.alpha_running else set()
        if self.command("db", "sync", codes=refused or {0}) == 0:
            self.model.expanded, self.model.contracted = True, True
            self.model.waiting_rows, self.model.contracting = 0, False
            self.model.ceiling_recorded = True

    def check(self) -> None:
        self.command("db", "check", codes=self.model.check())

    def start(self, release: str) -> None:
        if release == "beta":
            served = self.model.expanded
        else:
            served = not (self.model.contracted or self.model.contracting)
        maybe = release == "beta" and served and not self.model.ceiling_recorded
        node = Node(self.settings, release, "volume", next(self.hosts))
        try:
            node.start()
        except SchemaRefused:
            ok = maybe or not served
            self.expect(ok, f"{release} node refused on a schema that serves it")
            return
        self.model.nodes.append(node)
        self.expect(
            served, f"{release} node started on a schema that does not serve it"
        )

    def stop(self) -> None:
        if self.model.nodes:
            node = self.model.nodes.pop(self.rng.randrange(len(self.model.nodes)))
            node.stop()
            self.model.stopped.append(node)

    def remove(self) -> None:
        if self.model.stopped:
            node = self.model.stopped.pop(self.rng.randrange(len(self.model.stopped)))
            self.command("service", "remove", "volume", node.host, codes={0})

    def finish(self, engine: sa.Engine, seeded: dict[str, str]) -> None:
        """The upgrade done right from wherever the walk left it; no row lost."""
        while self.model.nodes:
            self.stop()
        while self.model.stopped:
            self.remove()
        for step in (self.expand, self.migrate, self.contract):
            step()
        self.expect(self.model.contracted, "the right order did not contract")
        with engine.connect() as conn:
            table = beta.volumes
            rows = dict(conn.execute(sa.select(table.c.id, table.c.name)).all())
        lost = {k: v for k, v in seeded.items() if rows.get(k) != v}
        self.expect(not lost, f"rows lost or wrong after the upgrade: {lost}")

    def close(self) -> None:
        for node in self.model.nodes:
            node.stop()
        self.engine.dispose()


@pytest.mark.parametrize("walk", range(WALKS))
def test_steps_in_any_order_keep_every_promise(engine, operator, db_url, walk, request):
    seed = random.randrange(2**31)
    seeded = {f"v{i}": f"name-{i}" for i in range(SEEDED_ROWS)}
    insert_alpha_volumes(engine, seeded)
    steps = Walk(operator, db_url, seed)
    try:
        steps.run(STEPS)
        steps.finish(engine, seeded)
    finally:
        steps.close()
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # shown even without -s
        print(f"\noperator mistakes (seed {seed}): {steps.cases} steps, all held")
