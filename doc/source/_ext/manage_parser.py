"""The argparse parser of ``rpccompat-manage``, for the CLI reference.

``Manage.main`` builds its parser inside oslo.config, which hands it to
argparse only when it parses a command line.  Here that moment is caught:
``main`` runs with no arguments and no config files, and the parser is
taken as argparse is asked to parse, before anything is parsed or run.
The reference is then generated from the very parser an operator meets.
"""

from __future__ import annotations

import argparse
import warnings

# Importing oslo.messaging prints eventlet's notice; the console script
# quiets it the same way (rpccompat.console).
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from rpccompat.manage import Manage  # noqa: E402


class _Built(BaseException):
    """Raised from argparse's parse_args to stop ``main`` there."""


def parser() -> argparse.ArgumentParser:
    """``rpccompat-manage``'s parser, its commands and their arguments."""
    built: list[argparse.ArgumentParser] = []
    parse_args = argparse.ArgumentParser.parse_args

    def caught(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        built.append(self)
        raise _Built

    argparse.ArgumentParser.parse_args = caught  # type: ignore[method-assign]
    try:
        Manage(default_config_files=[]).main([])
    except _Built:
        pass
    finally:
        argparse.ArgumentParser.parse_args = parse_args  # type: ignore[method-assign]
    (top,) = built
    return top
