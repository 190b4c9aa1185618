#!/bin/bash
# Grenade shutdown hook: stop this node's rpccompat processes before the
# upgrade.
# shellcheck source-path=SCRIPTDIR

set -o errexit

# shellcheck source=/dev/null
source "$GRENADE_DIR/grenaderc"
# shellcheck source=/dev/null
source "$GRENADE_DIR/functions"
# shellcheck source=/dev/null
source "$BASE_DEVSTACK_DIR/stackrc"

RPCCOMPAT_DEVSTACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../settings
source "$RPCCOMPAT_DEVSTACK_DIR/settings"
# shellcheck source=../lib/rpccompat
source "$RPCCOMPAT_DEVSTACK_DIR/lib/rpccompat"

set -o xtrace

stop_rpccompat
ensure_services_stopped rpccompat-volume rpccompat-api
