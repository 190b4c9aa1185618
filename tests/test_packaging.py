"""The distribution a user installs: built from this checkout, checked as
PyPI would, installed into a virtualenv of its own and run from outside
the repository."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def run(*argv: str | Path, cwd: Path, timeout: float = 600) -> str:
    done = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, ROOT, cwd=out)
    return out


def test_the_sdist_and_the_wheel_pass_twine_check_strict(dist):
    [sdist] = dist.glob("*.tar.gz")
    [wheel] = dist.glob("*.whl")
    run(sys.executable, "-m", "twine", "check", "--strict", sdist, wheel, cwd=dist)
    assert "-0.0.0" not in wheel.name  # the version comes from git
    with tarfile.open(sdist) as archive:
        inside = {name.partition("/")[2] for name in archive.getnames()}
    tracked = run("git", "ls-files", cwd=ROOT).split()
    assert set(tracked) <= inside  # what the tests need, and the licence


def test_the_wheel_in_a_fresh_virtualenv_runs_from_outside_the_repository(
    dist, tmp_path
):
    [wheel] = dist.glob("*.whl")
    env = tmp_path / "env"
    venv.create(env, with_pip=True)
    run(env / "bin" / "pip", "install", "--quiet", wheel, cwd=tmp_path)
    manage = [env / "bin" / "rpccompat-manage", "--db-url", "sqlite:///test.sqlite"]
    version = run(env / "bin" / "rpccompat-manage", "--version", cwd=tmp_path)
    assert wheel.name.split("-")[1] in version
    assert "synced" in run(*manage, "db", "sync", cwd=tmp_path)
    assert "up to date" in run(*manage, "db", "version", cwd=tmp_path)
    demo = run(env / "bin" / "rpccompat-demo", cwd=tmp_path)
    assert ", 0 failed; " in demo and " 0 lost, 0 wrong" in demo
