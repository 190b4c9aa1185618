"""The schema guard's rule, on releases a node's own history may not know."""

from __future__ import annotations

import random

from rpccompat import guard
from rpccompat.history import History, Release
from rpccompat.registry import utcnow

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
