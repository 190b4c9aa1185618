#!/bin/bash
# devstack plugin entry point for rpccompat's sample service; devstack
# sources it as `plugin.sh MODE [PHASE]`.
# shellcheck source-path=SCRIPTDIR

# shellcheck source=lib/rpccompat
source "$(dirname "${BASH_SOURCE[0]}")/lib/rpccompat"

if is_service_enabled rpccompat-volume rpccompat-api; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing rpccompat"
        install_rpccompat
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring rpccompat"
        configure_rpccompat
        init_rpccompat
    elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
        echo_summary "Starting rpccompat ($RPCCOMPAT_RELEASE)"
        start_rpccompat
    fi

    if [[ "$1" == "unstack" ]]; then
        stop_rpccompat
    fi

    if [[ "$1" == "clean" ]]; then
        cleanup_rpccompat
    fi
fi
