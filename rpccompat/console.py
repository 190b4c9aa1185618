"""The console scripts.

Each quiets what the libraries print as they are imported (eventlet's
deprecation notice: nine lines on every run) and only then imports its
command: a choice of the program, never of the library, whose users keep
every warning.
"""

from __future__ import annotations

import importlib
import warnings


def run(module: str) -> int:
    """``module.main()``, its libraries imported quietly; for the console
    scripts of rpccompat and of the services built on it."""
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    code: int = importlib.import_module(module).main()
    return code


def manage() -> int:
    """``rpccompat-manage``."""
    return run("rpccompat.manage")
