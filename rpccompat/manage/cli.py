"""The command line: oslo.config parsing, dispatch, one-line errors.

Every failure an operator can meet - bad input, a server that does not
answer, a refused step - ends in one line on stderr (what, why, what to do)
and an exit code, never a traceback (``--debug`` shows one) and never a
password: every error, usage error and log line passes through
:func:`rpccompat.scrub.scrub`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from oslo_config import cfg
from sqlalchemy import exc as sa_exc

from rpccompat import opts
from rpccompat.db import MigrationTree
from rpccompat.engine import cancel_on_interrupt
from rpccompat.exceptions import RPCCompatError, ServiceNotFound, first_line
from rpccompat.history import History
from rpccompat.manage.base import BAD_INPUT, ERROR, NOT_FOUND, CommandError, Context
from rpccompat.manage.db import DbCommands
from rpccompat.manage.service import ServiceCommands
from rpccompat.manage.upgrade import UpgradeCommands
from rpccompat.scrub import ScrubPasswords, one_line_usage_errors, passwords, scrub

INTERRUPTED = 130  # as a shell reports SIGINT
CLOSED_PIPE = 141  # as a shell reports SIGPIPE: the reader went away
ARG_PREFIX = "arg_"  # keeps command arguments apart from oslo.config's options
CATEGORIES: dict[str, Callable[[Context], Any]] = {
    "service": ServiceCommands,
    "db": DbCommands,
    "upgrade": UpgradeCommands,
}
cli_opts = [
    cfg.StrOpt(
        "db-url",
        secret=True,
        metavar="URL",
        help="SQLAlchemy URL of the database; overrides [database] connection",
    ),
    cfg.StrOpt(
        "transport-url",
        dest="cli_transport_url",
        secret=True,
        metavar="URL",
        help="oslo.messaging URL; overrides [DEFAULT] transport_url",
    ),
    cfg.BoolOpt("debug", default=False, help="show tracebacks and debug logs"),
]


def _register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_cli_opts(cli_opts)
    opts.register_messaging_opts(conf)
    conf.register_opts(opts.service_opts)
    conf.register_opts(opts.database_opts, group="database")


class Manage:
    """``rpccompat-manage``, or its commands inside a service's own tool.

    A service mounts them with its own trees (and so its history)::

        manage = Manage(prog="volumes-manage", project="volumes", trees=[TREE])
        sys.exit(manage.main())

    ``categories`` adds the service's own command classes (each built with
    the :class:`Context`) next to ``service``, ``db`` and ``upgrade``.
    """

    def __init__(
        self,
        *,
        prog: str = "rpccompat-manage",
        project: str = "rpccompat",
        trees: Sequence[MigrationTree] | None = None,
        history: History | None = None,
        categories: Mapping[str, Callable[[Context], Any]] | None = None,
        default_config_files: Sequence[str] | None = None,
        version: str | None = None,
    ) -> None:
        self.prog = prog
        self.version = version or importlib.metadata.version("rpccompat")
        self.project = project
        self.trees = trees
        self.history = history
        self.categories = {**CATEGORIES, **(categories or {})}
        self.default_config_files = default_config_files

    def main(self, argv: Sequence[str] | None = None) -> int:
        conf = cfg.ConfigOpts()
        _register_opts(conf)
        context = Context(conf, prog=self.prog, trees=self.trees, history=self.history)
        commands = {name: make(context) for name, make in self.categories.items()}
        conf.register_cli_opt(
            cfg.SubCommandOpt(
                "command",
                title="Commands",
                handler=lambda subparsers: _add_parsers(subparsers, commands),
            )
        )
        args = list(sys.argv[1:] if argv is None else argv)
        try:
            with one_line_usage_errors():
                conf(
                    args,
                    project=self.project,
                    prog=self.prog,
                    version=self.version,
                    default_config_files=(
                        None
                        if self.default_config_files is None
                        else list(self.default_config_files)
                    ),
                )
        except SystemExit as e:  # argparse's error is on stderr, scrubbed
            return BAD_INPUT if e.code == 2 else int(e.code or 0)
        except (cfg.Error, OSError, UnicodeDecodeError) as e:
            # OSError: a directory or an unreadable file; UnicodeDecodeError:
            # a binary one.  oslo.config raises both as they come.
            return _fail(
                f"{self.prog}: bad configuration: {e}; check the --config-file "
                "paths and what they hold",
                BAD_INPUT,
                passwords(*args),
            )
        _apply_overrides(conf)
        secrets = passwords(*args, conf.database.connection, conf.transport_url)
        _configure_logging(conf.debug, secrets)
        cancel_on_interrupt()
        try:
            code = _dispatch(conf)
            sys.stdout.flush()  # a closed pipe shows here, not at exit
            return code
        except KeyboardInterrupt:
            return _fail(_interrupted(self.prog, conf), INTERRUPTED, secrets)
        except BrokenPipeError:
            # Python's own recipe: nothing more to the closed pipe, not even
            # the flush at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return CLOSED_PIPE
        except Exception as e:
            if _by_interrupt(e):
                return _fail(_interrupted(self.prog, conf), INTERRUPTED, secrets)
            if conf.debug:
                raise
            code = _code(e, getattr(conf.command.action_fn, "error_code", ERROR))
            return _fail(f"{self.prog}: {_explain(e, conf, self.prog)}", code, secrets)
        finally:
            context.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``rpccompat-manage``: trees from ``[database] migration_trees``."""
    return Manage().main(argv)


def _add_parsers(subparsers: Any, commands: Mapping[str, Any]) -> None:
    for category, obj in commands.items():
        parser = subparsers.add_parser(category, help=_summary(type(obj)))
        actions = parser.add_subparsers(dest="action", metavar="ACTION")
        actions.required = True
        for name, fn in _actions(obj):
            hyphenated = name.replace("_", "-")
            action = actions.add_parser(
                hyphenated,
                aliases=[name] if name != hyphenated else [],
                help=_summary(fn),
                description=inspect.getdoc(fn),
                # The docstring's paragraphs, its exit codes last, as written.
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            for flags, kwargs in getattr(fn, "arguments", []):
                dest = flags[0].lstrip("-").replace("-", "_")
                if flags[0].startswith("-"):
                    if kwargs.get("action") in (None, "append"):
                        # Not argparse's default, the prefixed dest.
                        kwargs = {"metavar": dest.upper(), **kwargs}
                    action.add_argument(*flags, dest=ARG_PREFIX + dest, **kwargs)
                else:
                    action.add_argument(
                        ARG_PREFIX + dest, metavar=dest.upper(), **kwargs
                    )
            action.set_defaults(action_fn=fn)


def _actions(obj: Any) -> Iterator[tuple[str, Callable[..., int]]]:
    # Look on the class: touching the instance's attributes could build
    # what the context must only build once the configuration is parsed.
    for name, _ in inspect.getmembers(type(obj), inspect.isfunction):
        if not name.startswith("_"):
            yield name, getattr(obj, name)


def _summary(obj: Any) -> str:
    return (inspect.getdoc(obj) or "").split("\n\n")[0].replace("\n", " ")


def _dispatch(conf: cfg.ConfigOpts) -> int:
    fn = conf.command.action_fn
    return fn(
        **{
            name: getattr(conf.command, ARG_PREFIX + name)
            for name in inspect.signature(fn).parameters
        }
    )


def _apply_overrides(conf: cfg.ConfigOpts) -> None:
    if conf.db_url:
        conf.set_override("connection", conf.db_url, "database")
    if conf.cli_transport_url:
        conf.set_override("transport_url", conf.cli_transport_url)


def _explain(error: Exception, conf: cfg.ConfigOpts, prog: str) -> str:
    """What went wrong, why, and what to do, in one line; the commands it
    names as ``prog`` runs them."""
    if isinstance(error, sa_exc.DBAPIError):
        reason = first_line(error.orig or error)
        where = scrub(conf.database.connection)
        if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
            return (
                f"cannot use the database at {where}: {reason}; check that the "
                "server runs and [database] connection (or --db-url)"
            )
        return f"the database at {where} refused a statement: {reason}"
    if isinstance(error, RPCCompatError):
        return error.render(prog)
    return (
        f"unexpected {type(error).__name__}: {error}; run again with --debug for "
        "the traceback and report it"
    )


def _by_interrupt(error: BaseException) -> bool:
    """Whether ``error`` was raised while unwinding from Ctrl-C (SQLAlchemy's
    PendingRollbackError on a connection the interrupt invalidated)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, KeyboardInterrupt):
            return True
        cause = cause.__context__
    return False


def _interrupted(prog: str, conf: cfg.ConfigOpts) -> str:
    command = f"{conf.command.name} {conf.command.action}"
    return (
        f"{prog}: {command} interrupted before it finished; run {prog} "
        f"{command} again to complete it"
    )


def _code(error: Exception, failed: int) -> int:
    if isinstance(error, CommandError) and error.code is not None:
        return error.code
    return NOT_FOUND if isinstance(error, ServiceNotFound) else failed


def _fail(message: str, code: int, secrets: list[str]) -> int:
    print(scrub(" ".join(message.split()), secrets), file=sys.stderr)
    return code


def _configure_logging(debug: bool, secrets: list[str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(ScrubPasswords(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("kombu").setLevel(logging.DEBUG if debug else logging.CRITICAL)
