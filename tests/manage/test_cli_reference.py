"""``rpccompat-manage`` says every exit code the code defines: each command
in its ``--help`` (the last paragraph of its description), the codes they
share on the CLI reference (doc/source/reference/cli.rst), which has every
command.

The page's usage, options and descriptions come from the parser itself
(sphinx-argparse); the codes are checked here against the constants the
commands return.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from oslo_upgradecheck.upgradecheck import Code

from rpccompat.db import Check, data
from rpccompat.manage import base, cli, upgrade

DOC = Path(__file__).parents[2] / "doc" / "source"
PAGE = DOC / "reference" / "cli.rst"
PATH = re.compile(r"^   :path: (.+)$", re.MULTILINE)

# The codes every command may exit with, beside its own.
EVERY_COMMAND = {base.OK, base.ERROR, base.BAD_INPUT, cli.INTERRUPTED, cli.CLOSED_PIPE}
CHANGES_A_ROW = {base.OK, base.NOT_FOUND}
DATA_MIGRATIONS = {data.DONE, data.MORE_TO_DO, data.ERRORS, base.BAD_INPUT}
# Each command's own codes, from the constants its code returns.
OWN = {
    "service list": {base.OK, base.ERROR},
    "service remove": CHANGES_A_ROW,
    "service disable": CHANGES_A_ROW,
    "service enable": CHANGES_A_ROW,
    "service force-down": CHANGES_A_ROW,
    "db expand": {base.OK, base.ERROR},
    "db migrate": DATA_MIGRATIONS,
    "db online-data-migrations": DATA_MIGRATIONS,
    "db contract": {
        base.OK,
        base.ERROR,
        Check.EXPAND_NEEDED,
        Check.MIGRATIONS_PENDING,
        Check.CONTRACT_BLOCKED,
    },
    "db version": {base.OK},
    "db check": set(Check),
    "db sync": {
        base.OK,
        base.ERROR,
        Check.MIGRATIONS_PENDING,
        Check.CONTRACT_BLOCKED,
    },
    "db lint": {base.OK, base.ERROR},
    "db revision": {base.OK, base.ERROR, base.BAD_INPUT},
    "upgrade check": {
        Code.SUCCESS,
        Code.WARNING,
        Code.FAILURE,
        upgrade.CHECKS_FAILED_TO_RUN,
    },
}


def parser():
    """The parser the page is generated from, loaded as Sphinx loads it."""
    path = DOC / "_ext" / "manage_parser.py"
    spec = importlib.util.spec_from_file_location("manage_parser", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parser()


def subcommands(parser) -> dict[str, object]:
    """Name -> parser of each subcommand, without the aliases."""
    (action,) = [a for a in parser._actions if a.choices and a.nargs == "A..."]
    return {
        choice.dest: action.choices[choice.dest] for choice in action._choices_actions
    }


def commands() -> set[str]:
    return {
        f"{category} {name}"
        for category, sub in subcommands(parser()).items()
        for name in subcommands(sub)
    }


def descriptions() -> dict[str, str]:
    """Each command's description, as ``--help`` prints it."""
    return {
        f"{category} {name}": action.description or ""
        for category, sub in subcommands(parser()).items()
        for name, action in subcommands(sub).items()
    }


def codes_named(text: str) -> set[int]:
    return {int(n) for n in re.findall(r"``(\d+)``", text)}


def test_every_command_is_on_the_page_and_nothing_else():
    assert set(PATH.findall(PAGE.read_text())) == commands()


def test_every_command_has_its_exit_codes_in_this_test():
    assert set(OWN) == commands()


@pytest.mark.parametrize("command", sorted(OWN))
def test_each_command_says_its_own_exit_codes_in_its_help(command):
    """The last paragraph, so the summary the command list shows stays one."""
    *_, last = descriptions()[command].split("\n\n")
    assert last.startswith("Exit codes"), last
    named = {int(n) for n in re.findall(r"\b(\d+)\b", last)}
    missing = {int(code) for code in OWN[command]} - named
    assert not missing, f"{command}: exit codes {sorted(missing)} not in its help"


def test_the_codes_every_command_shares_are_listed_once_for_all():
    text = PAGE.read_text()
    shared = text.split("Exit codes of every command", 1)[1].split(":path:", 1)[0]
    missing = {int(code) for code in EVERY_COMMAND} - codes_named(shared)
    assert not missing, f"exit codes {sorted(missing)} not on the page"
