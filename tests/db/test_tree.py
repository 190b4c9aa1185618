"""Migration trees: found by name, heads kept in files, versions composite."""

from __future__ import annotations

import pytest

from rpccompat.db import tree as treemod
from rpccompat.exceptions import MigrationError
from rpccompat_demo import schema


def test_a_project_tree_is_found_by_entry_point_or_module_path():
    assert treemod.load("volumes") is schema.TREE
    assert treemod.load("rpccompat_demo.schema:TREE") is schema.TREE
    with pytest.raises(
        MigrationError, match=r"no migration tree named 'nova'.*volumes"
    ):
        treemod.load("nova")


def test_each_branch_of_the_sample_tree_is_in_order_with_one_head():
    assert [r.revision for r in schema.GAMMA_TREE.revisions("expand")] == [
        "alpha_expand",
        "beta_expand",
        "gamma_expand",
    ]
    assert [r.revision for r in schema.GAMMA_TREE.revisions("contract")] == [
        "alpha_contract",
        "beta_contract",
        "gamma_contract",
    ]
    assert schema.GAMMA_TREE.head("contract") == "gamma_contract"
    schema.GAMMA_TREE.check_head_files()


def test_a_tree_as_of_a_release_leaves_out_what_newer_releases_ship(tmp_path):
    beta = schema.GAMMA_TREE.as_of("beta")
    assert schema.TREE.newer == beta.newer == {"gamma"}
    assert [r.revision for r in beta.revisions("expand")] == [
        "alpha_expand",
        "beta_expand",
    ]
    assert (beta.head("expand"), beta.head("contract")) == (
        "beta_expand",
        "beta_contract",
    )
    assert [m.release for m in beta.data_migrations] == ["beta"]
    assert beta.history is not None and beta.history.current.name == "beta"
    assert beta.problems() == []
    assert set(beta.render("sqlite")) == {
        "alpha_expand",
        "beta_expand",
        "alpha_contract",
        "beta_contract",
    }
    alpha = beta.as_of("alpha")
    assert (alpha.head("expand"), alpha.head("contract")) == (
        "alpha_expand",
        "alpha_contract",
    )
    assert alpha.newer == {"beta", "gamma"} and list(alpha.data_migrations) == []
    # The head files name the whole folder's heads: only the whole tree
    # checks them, and scaffolds.
    for refused in (beta.check_head_files, lambda: beta.new_revision("expand", "x")):
        with pytest.raises(MigrationError, match="leaves out the revisions of gamma"):
            refused()
    with pytest.raises(ValueError, match="no history"):
        treemod.MigrationTree("bare", tmp_path).as_of("beta")


def test_a_forked_branch_is_refused(tmp_path):
    for name, down in [("a", None), ("b", "a"), ("c", "a")]:
        (tmp_path / f"{name}.py").write_text(
            f"revision = {name!r}\ndown_revision = {down!r}\n"
            f"branch_labels = {('expand',) if down is None else None!r}\n"
            "depends_on = None\ndef upgrade():\n    pass\n"
        )
    with pytest.raises(MigrationError, match="expand branch has heads"):
        treemod.MigrationTree("forked", tmp_path).head("expand")
