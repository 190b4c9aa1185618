"""The console scripts.

Each quiets what the libraries print as they are imported (eventlet's
deprecation notice: nine lines on every run) and only then imports its
command: a choice of the program, never of the library, whose users keep
every warning.
"""

from __future__ import annotations

import importlib
import warnings


def _run(module: str) -> int:
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    code: int = importlib.import_module(module).main()
    return code


def manage() -> int:
    """``rpccompat-manage``."""
    return _run("rpccompat.manage")


def demo() -> int:
    """``rpccompat-demo``."""
    return _run("rpccompat.demo.cli")


def demo_node() -> int:
    """``rpccompat-demo-node``."""
    return _run("rpccompat.demo.node")


def demo_client() -> int:
    """``rpccompat-demo-client``."""
    return _run("rpccompat.demo.client")


def upgrade_test() -> int:
    """``rpccompat-upgrade-test``."""
    return _run("rpccompat.demo.harness")
