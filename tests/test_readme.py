"""The README's quick start runs as written, from an empty folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def quick_start() -> dict[str, str]:
    """Its first block of each language: the config file, the shell command,
    the code (an ini block further on is a setup.cfg's)."""
    text = README.read_text()
    section = text.split("## A service developer's quick start\n")[1].split("\n## ")[0]
    blocks: dict[str, str] = {}
    for language, body in re.findall(r"```(\w+)\n(.*?)```", section, re.DOTALL):
        blocks.setdefault(language, body)
    return blocks


def test_the_quick_start_runs_as_written(tmp_path):
    blocks = quick_start()
    (tmp_path / "volumes.conf").write_text(blocks["ini"])
    (tmp_path / "quick_start.py").write_text(blocks["python"])
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    for command in blocks["shell"].strip().splitlines():
        subprocess.run(command, shell=True, cwd=tmp_path, env=env, check=True,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    ran = subprocess.run(
        [sys.executable, "-W", "ignore", "quick_start.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "v: travels in future_args"
