"""The distribution a user installs: built from this checkout, checked as
PyPI would, installed into a virtualenv of its own and run from outside
the repository."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import venv
import zipfile
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
    """The library's sdist and wheel, and the sample service's (demo/)."""
    out = tmp_path_factory.mktemp("dist")
    for project in (ROOT, ROOT / "demo"):
        run(sys.executable, "-m", "build", "--outdir", out, project, cwd=out)
    return out


def test_the_sdists_and_the_wheels_pass_twine_check_strict(dist):
    built = sorted(dist.iterdir())
    run(sys.executable, "-m", "twine", "check", "--strict", *built, cwd=dist)
    [sdist] = dist.glob("rpccompat-*.tar.gz")
    [wheel] = dist.glob("rpccompat-*.whl")
    assert "-0.0.0" not in wheel.name  # the version comes from git
    with tarfile.open(sdist) as archive:
        inside = {name.partition("/")[2] for name in archive.getnames()}
    tracked = run("git", "ls-files", cwd=ROOT).split()
    assert set(tracked) <= inside  # what the tests need, and the licence


def test_the_library_wheel_holds_only_the_library(dist):
    """An adopter's environment gets rpccompat's own scripts and trees, not
    the sample service's."""
    [wheel] = dist.glob("rpccompat-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = archive.read(points).decode()
    assert {n.split("/")[0] for n in names if not n.endswith(".dist-info")} >= {
        "rpccompat"
    }
    assert not [n for n in names if n.startswith("rpccompat_demo")]
    assert "rpccompat-manage" in entry_points
    assert "demo" not in entry_points and "upgrade-test" not in entry_points
    assert "migration_trees" not in entry_points


def test_the_wheels_in_a_fresh_virtualenv_run_from_outside_the_repository(
    dist, tmp_path
):
    [wheel] = dist.glob("rpccompat-*.whl")
    [demo] = dist.glob("rpccompat_demo-*.whl")
    env = tmp_path / "env"
    venv.create(env, with_pip=True)
    run(env / "bin" / "pip", "install", "--quiet", wheel, cwd=tmp_path)
    manage = [env / "bin" / "rpccompat-manage", "--db-url", "sqlite:///test.sqlite"]
    version = run(env / "bin" / "rpccompat-manage", "--version", cwd=tmp_path)
    assert wheel.name.split("-")[1] in version
    assert "synced" in run(*manage, "db", "sync", cwd=tmp_path)
    assert "up to date" in run(*manage, "db", "version", cwd=tmp_path)
    assert not (env / "bin" / "rpccompat-demo").exists()
    run(env / "bin" / "pip", "install", "--quiet", demo, cwd=tmp_path)
    demo_run = run(env / "bin" / "rpccompat-demo", cwd=tmp_path)
    assert ", 0 failed; " in demo_run and " 0 lost, 0 wrong" in demo_run
