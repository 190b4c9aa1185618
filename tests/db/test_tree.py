"""Migration trees: found by name, heads kept in files, versions composite."""

from __future__ import annotations

import pytest

from rpccompat.db import tree as treemod
from rpccompat.demo import schema
from rpccompat.exceptions import MigrationError


def test_a_project_tree_is_found_by_entry_point_or_module_path():
    assert treemod.load("volumes") is schema.TREE
    assert treemod.load("rpccompat.demo.schema:TREE") is schema.TREE
    with pytest.raises(
        MigrationError, match=r"no migration tree named 'nova'.*volumes"
    ):
        treemod.load("nova")


def test_each_branch_of_the_sample_tree_is_in_order_with_one_head():
    assert [r.revision for r in schema.TREE.revisions("expand")] == [
        "alpha_expand",
        "beta_expand",
    ]
    assert [r.revision for r in schema.TREE.revisions("contract")] == [
        "alpha_contract",
        "beta_contract",
    ]
    assert schema.TREE.head("contract") == "beta_contract"
    schema.TREE.check_head_files()


def test_a_forked_branch_is_refused(tmp_path):
    for name, down in [("a", None), ("b", "a"), ("c", "a")]:
        (tmp_path / f"{name}.py").write_text(
            f"revision = {name!r}\ndown_revision = {down!r}\n"
            f"branch_labels = {('expand',) if down is None else None!r}\n"
            "depends_on = None\ndef upgrade():\n    pass\n"
        )
    with pytest.raises(MigrationError, match="expand branch has heads"):
        treemod.MigrationTree("forked", tmp_path).head("expand")
