"""The documentation quotes the code the tests run: its includes resolve,
and every recipe of the catalogue is on the recipes page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.db.shapes import SHAPES

SOURCE = Path(__file__).parent.parent / "doc" / "source"
INCLUDE = re.compile(r"^\.\. literalinclude:: (\S+)\n((?:   :.*\n)*)", re.MULTILINE)
MARKERS = ("start-after", "end-before")


def includes(page: Path) -> list[tuple[Path, dict[str, str]]]:
    """Each ``literalinclude`` of ``page``: the file and its options."""
    found = []
    for match in INCLUDE.finditer(page.read_text()):
        options = dict(re.findall(r"   :([\w-]+):\s*(.*)", match.group(2)))
        found.append(((page.parent / match.group(1)).resolve(), options))
    return found


@pytest.mark.parametrize(
    "page", sorted(SOURCE.rglob("*.rst")), ids=lambda p: str(p.relative_to(SOURCE))
)
def test_every_include_quotes_code_that_is_there(page):
    for path, options in includes(page):
        assert path.is_file(), f"{page.name} includes {path}, which is gone"
        text = path.read_text()
        for marker in MARKERS:
            if marker in options:
                assert options[marker] in text, f"{path.name}: no {options[marker]!r}"
        if "pyobject" in options:
            assert f"def {options['pyobject']}(" in text


def test_every_recipe_the_tests_run_is_on_the_recipes_page():
    quoted = {
        options["start-after"].removeprefix("# recipe: ")
        for _, options in includes(SOURCE / "user" / "recipes.rst")
        if "start-after" in options
    }
    assert set(SHAPES) | {"unique index"} <= quoted
