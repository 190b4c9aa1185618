"""The schema guard's rule, on releases a node's own history may not know."""

from __future__ import annotations

import random
import threading

from sqlalchemy import orm

from rpccompat import guard
from rpccompat.history import History, Release
from rpccompat.registry import ServiceRegistry, utcnow
from rpccompat_demo import beta
from tests.conftest import mixed_period_database

HANG = 120.0  # only to detect a hang

NAMES = ("alpha", "beta", "gamma", "delta")
NEWEST = History(
    "p", [Release(n, rpc={"b": f"1.{i}"}, objects={}) for i, n in enumerate(NAMES)]
)


def shipped_with(position: int) -> Release:
    """A node's release as its own code knows it: nothing newer in its history."""
    return History("p", NEWEST.releases[: position + 1]).current


def test_a_node_may_start_only_inside_what_the_schema_serves():
    """Seeded: refused exactly when the floor or a running contract is above
    the node's release or the ceiling is below it, whether or not the node's
    history knows the releases the database names."""
    seed = random.randrange(2**31)
    rng = random.Random(seed)
    for _ in range(500):
        own = rng.randrange(len(NAMES))
        ceiling, floor, contracting = (
            rng.choice([None, *range(len(NAMES))]) for _ in range(3)
        )
        state = guard.SchemaState(
            "p",
            *(
                None if at is None else guard.Mark.of(NEWEST.releases[at])
                for at in (ceiling, floor, contracting)
            ),
            contracting_since=utcnow(),
        )
        release = shipped_with(own)
        gone = floor is not None and floor > own
        expected = (
            gone
            or (contracting is not None and contracting > own)
            or ceiling is None
            or ceiling < own
        )
        case = f"seed {seed}: {own=} {ceiling=} {floor=} {contracting=}"
        assert (state.refusal(release) is not None) == expected, case
        assert (state.gone(release) is not None) == gone, case


def test_a_contract_taking_its_state_waits_for_a_starting_node_and_sees_it(db_url):
    """The node reads the state, then writes its row: a contract that takes
    its state in between must wait for the row, and then see it (were the
    state read without holding it, the contract would see no row)."""
    engine = mixed_period_database(db_url)
    registry = ServiceRegistry(engine)
    seen: list[list[str]] = []

    def contract_takes_its_state() -> None:
        with guard.contracting(engine, {"volumes": guard.Mark.of(beta_release)}):
            seen.append([s.host for s in registry.services()])

    beta_release = beta.HISTORY.current
    contract = threading.Thread(target=contract_takes_its_state)
    try:

        def starting_node(session: orm.Session) -> None:
            guard.admit(session, beta.HISTORY, "volume@n1 (beta)")
            contract.start()
            contract.join(1.0)  # it would finish here, and miss the row

        registry.report(
            host="n1",
            binary="volume",
            release="beta",
            rpc_version="1.1",
            objects_version="1.1",
            check=starting_node,
        )
        contract.join(HANG)
        assert seen == [["n1"]]
    finally:
        engine.dispose()
