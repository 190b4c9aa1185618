#!/usr/bin/env bash
# Grenade upgrade hook: the rolling upgrade of rpccompat's sample service on
# this node, alpha -> beta.  Other nodes of a multi-node job may still run
# alpha, so the schema change is split: expand before any beta process runs,
# migrate the data once beta runs, and contract only when nothing old is left.
# shellcheck source-path=SCRIPTDIR

set -o errexit

# shellcheck source=/dev/null
source "$GRENADE_DIR/grenaderc"
# shellcheck source=/dev/null
source "$GRENADE_DIR/functions"
# shellcheck source=/dev/null
source "$TARGET_DEVSTACK_DIR/stackrc"

RPCCOMPAT_DEVSTACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../settings
source "$RPCCOMPAT_DEVSTACK_DIR/settings"
# shellcheck source=../lib/rpccompat
source "$RPCCOMPAT_DEVSTACK_DIR/lib/rpccompat"

set -o xtrace

# Config changes a release needs come from from-<old release>/, keyed on the
# release the nodes ran rather than on grenade's devstack branch (grenade's
# upgrade_project): alpha and beta ship on the same branch.
function configure_upgrade_from {
    local upgrade_file=$RPCCOMPAT_DEVSTACK_DIR/upgrade/from-$1/upgrade-rpccompat
    if [[ -e $upgrade_file ]]; then
        # shellcheck source=from-alpha/upgrade-rpccompat
        source "$upgrade_file"
        configure_rpccompat_upgrade
    else
        echo "No config changes found for an upgrade of rpccompat from $1"
    fi
}

function migrate_data {
    # Exit 1 means work remains (rows written meanwhile by old nodes); a few
    # more runs finish it, a persistent 1 is a failure like 2.
    local rc attempt
    for attempt in 1 2 3; do
        rc=0
        rpccompat_manage db migrate || rc=$?
        [[ $rc -eq 1 ]] || break
        echo "rpccompat-manage db migrate: more to do after run $attempt"
    done
    [[ $rc -eq 0 ]] || die $LINENO "rpccompat-manage db migrate failed (exit $rc)"
}

function contract_if_allowed {
    local upgrade_rc=0 db_rc=0
    rpccompat_manage upgrade check || upgrade_rc=$?
    rpccompat_manage db check || db_rc=$?
    case $upgrade_rc in
        0|1|2) ;;
        *) die $LINENO "rpccompat-manage upgrade check failed to run (exit $upgrade_rc)" ;;
    esac
    # Only old-release services elsewhere (db check 6) explain a failed
    # upgrade check; anything else failing it forbids the contract.
    case $db_rc in
        0|5)
            if [[ $upgrade_rc -eq 2 ]]; then
                die $LINENO "rpccompat-manage upgrade check fails after the upgrade (see above); not contracting"
            fi
            if [[ $db_rc -eq 5 ]]; then
                rpccompat_manage db contract || die $LINENO "rpccompat-manage db contract failed (exit $?)"
            fi
            ;;
        6)
            echo "rpccompat: contract deferred: services on an older release remain on other nodes"
            echo "(rpccompat-manage service list).  Once they are upgraded or removed, finish with:"
            echo "  $RPCCOMPAT_BIN_DIR/rpccompat-manage --config-file $RPCCOMPAT_CONF db contract"
            ;;
        *)
            die $LINENO "rpccompat-manage db check exited $db_rc after expand and migrate (3: expand missing, 4: data migrations pending, 1: unreachable)"
            ;;
    esac
}

base_release=$(rpccompat_running_release)

# Keep the old config for comparison, as grenade does for every project.
[[ -d $SAVE_DIR/etc.rpccompat ]] || cp -pr "$RPCCOMPAT_CONF_DIR" "$SAVE_DIR/etc.rpccompat"

# The new code first: its expand revisions are what expand applies.
install_rpccompat
# Beta code expects the expanded schema, and alpha nodes elsewhere keep
# working on it, so it goes in before any beta process starts.
rpccompat_manage db expand || die $LINENO "rpccompat-manage db expand failed"
configure_upgrade_from "$base_release"
start_rpccompat
ensure_services_started rpccompat-volume rpccompat-api
migrate_data
contract_if_allowed

set +o xtrace
echo "rpccompat upgraded from $base_release to $RPCCOMPAT_RELEASE"
