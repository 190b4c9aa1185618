#!/bin/bash
# Grenade resource hook: a volume created before the upgrade must still be
# there, unchanged, after it.  Called as `resources.sh PHASE`.
# shellcheck source-path=SCRIPTDIR

set -o errexit

# shellcheck source=/dev/null
source "$GRENADE_DIR/grenaderc"
# shellcheck source=/dev/null
source "$GRENADE_DIR/functions"
# shellcheck source=/dev/null
source "$TOP_DIR/stackrc"

RPCCOMPAT_DEVSTACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../settings
source "$RPCCOMPAT_DEVSTACK_DIR/settings"
# shellcheck source=../lib/rpccompat
source "$RPCCOMPAT_DEVSTACK_DIR/lib/rpccompat"

set -o xtrace

RPCCOMPAT_GRENADE_VOLUME=${RPCCOMPAT_GRENADE_VOLUME:-rpccompat_grenade_volume}

# The client speaks the release the nodes run: alpha before the upgrade
# (create, and verify_noapi on alpha's schema), beta after it.
function demo_client {
    local release
    release=$(rpccompat_running_release)
    "$RPCCOMPAT_BIN_DIR/rpccompat-demo-client" --config-file "$RPCCOMPAT_CONF" \
        --release "$release" "$@"
}

function check_volume {
    local id shown name
    id=$(resource_get rpccompat volume_id)
    shown=$(demo_client show "$id" "$@") || die $LINENO "volume $id is gone"
    name=$("$RPCCOMPAT_PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["name"])' <<< "$shown")
    if [[ $name != "$RPCCOMPAT_GRENADE_VOLUME" ]]; then
        die $LINENO "volume $id is named '$name', not '$RPCCOMPAT_GRENADE_VOLUME'"
    fi
}

function create {
    local id
    id=$(demo_client create "$RPCCOMPAT_GRENADE_VOLUME")
    [[ -n $id ]] || die $LINENO "rpccompat-demo-client create printed no volume id"
    resource_save rpccompat volume_id "$id"
}

function verify {
    check_volume
}

function verify_noapi {
    # The services are down: read the row through the database.
    check_volume --direct
}

function destroy {
    demo_client delete "$(resource_get rpccompat volume_id)"
}

case $1 in
    create|verify|verify_noapi|destroy)
        "$1"
        ;;
    force_destroy)
        set +o errexit
        destroy
        ;;
esac
