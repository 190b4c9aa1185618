"""Errors rpccompat raises, each saying what went wrong, why, and what to do.

Errors a server sends back to a caller take one message argument only, so that
oslo.messaging can rebuild them on the caller's side (this module is in every
rpccompat client's ``allowed_remote_exmods``).
"""

from __future__ import annotations

#: The operator's tool, unless the commands are mounted in a service's own.
MANAGE = "rpccompat-manage"


class RPCCompatError(Exception):
    """Base of every rpccompat error.

    One that an operator's command clears names it in its message as
    ``{command}`` and keeps its words in ``command`` (``("db", "expand")``):
    ``str()`` names it under rpccompat-manage, and a tool the commands are
    mounted in renders it under its own name (:meth:`render`).
    """

    command: tuple[str, ...] = ()

    def render(self, prog: str = MANAGE) -> str:
        """The message, its command as ``prog`` runs it."""
        text = super().__str__()
        if not self.command:
            return text
        return text.replace("{command}", " ".join((prog, *self.command)))

    def __str__(self) -> str:
        return self.render()


class ConfigurationError(RPCCompatError):
    """An option that must be set is not, or holds something unusable."""


class HistoryError(RPCCompatError):
    """A history declaration, or a lookup in one, is wrong."""


class UnknownRelease(HistoryError):
    """A release name that the history does not declare."""


class UnknownVersion(HistoryError):
    """A version that no release of the history declares."""


class ServiceNotFound(RPCCompatError):
    """No live row in the services table for that binary and host."""


class IncompatibleCall(RPCCompatError):
    """A call that cannot reach the pinned peers intact; nothing was sent."""


class InvalidRPCInput(RPCCompatError):
    """A message carries a value the server will not read.

    Raised on the server before the method runs, so nothing was done; the
    caller must fix what it sends.
    """


class InvalidFutureArgs(InvalidRPCInput):
    """A caller sent a ``future_args`` that is not a dict (raised on the server)."""


class IncompatibleObject(RPCCompatError):
    """An object payload this release cannot read, or cannot send to a peer."""


def first_line(error: object) -> str:
    """The first line of an error's text: what a one-line message shows of a
    driver's multi-line error."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


class MigrationError(RPCCompatError):
    """A migration tree, or a step of expand / migrate / contract, is wrong."""

    def __init__(self, message: str = "", command: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.command = command


class LockNotGranted(MigrationError):
    """DDL could not take its lock within the retry budget; nothing was queued."""


class ContractRefused(MigrationError):
    """Contract would break something still running or not yet migrated.

    ``blockers`` lists each reason with the command that clears it.
    """

    def __init__(self, message: str, blockers: tuple = ()) -> None:
        super().__init__(message)
        self.blockers = blockers


class SchemaRefused(RPCCompatError):
    """The database's schema does not serve this node's release: the structures
    it needs are gone (contracted, or being contracted) or not there yet."""
