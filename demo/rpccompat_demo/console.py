"""The sample service's console scripts (see :mod:`rpccompat.console`)."""

from __future__ import annotations

from rpccompat.console import run


def demo() -> int:
    """``rpccompat-demo``."""
    return run("rpccompat_demo.cli")


def demo_node() -> int:
    """``rpccompat-demo-node``."""
    return run("rpccompat_demo.node")


def demo_client() -> int:
    """``rpccompat-demo-client``."""
    return run("rpccompat_demo.client")


def upgrade_test() -> int:
    """``rpccompat-upgrade-test``."""
    return run("rpccompat_demo.harness")
