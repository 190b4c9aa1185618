"""Versioned RPC methods, declared once for the client and the server.

A method declares the version that introduced it and, per argument, the
version that introduced the argument.  The server side accepts ``future_args``
on every method from its first version on (the Heat proposal), so an old
server ignores newer arguments and a new one uses them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import reprlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import oslo_messaging as messaging

from rpccompat.exceptions import InvalidFutureArgs
from rpccompat.history import version_tuple

LOG = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """What one RPC method is, as both sides of the wire need to know it."""

    name: str
    since: str
    arg_since: Mapping[str, str]
    defaults: Mapping[str, Any]
    required: frozenset[str]
    fallback: Callable[..., Any] | None

    def version_for(self, arg: str) -> str:
        return self.arg_since.get(arg, self.since)

    def is_default(self, arg: str, value: Any) -> bool:
        if arg not in self.defaults:
            return False
        default = self.defaults[arg]
        return value is default or (type(value) is type(default) and value == default)


def method(
    since: str,
    *,
    args: Mapping[str, str] | None = None,
    required: tuple[str, ...] = (),
    fallback: Callable[..., Any] | None = None,
) -> Callable[[F], F]:
    """Expose an endpoint method over RPC from version ``since`` on.

    ``args`` maps each argument added after the method to the version that
    added it; such an argument needs a default, since older callers never send
    it.  ``required`` names arguments whose value must not be dropped when the
    peers are too old for them: the client raises instead of carrying them in
    ``future_args``.  ``fallback(client, context, **kwargs)`` runs on the
    client instead of raising when the pinned peers lack the method.
    """
    args = dict(args or {})

    def decorate(fn: F) -> F:
        params = list(inspect.signature(fn).parameters.values())[2:]  # self, context
        names = {p.name for p in params}
        unknown = (set(args) | set(required)) - names
        if unknown:
            raise TypeError(f"{fn.__qualname__}: no argument(s) {sorted(unknown)}")
        if "future_args" in names:
            raise TypeError(f"{fn.__qualname__}: 'future_args' is added by rpccompat")
        for arg, version in args.items():
            if version_tuple(version) < version_tuple(since):
                raise TypeError(
                    f"{fn.__qualname__}: {arg} ({version}) predates {since}"
                )
        defaults = {p.name: p.default for p in params if p.default is not p.empty}
        for arg, version in args.items():
            if version != since and arg not in defaults:
                raise TypeError(
                    f"{fn.__qualname__}: argument {arg!r} was added in {version}, "
                    "after the method, so it needs a default for older callers"
                )
        spec = MethodSpec(
            fn.__name__, since, args, defaults, frozenset(required), fallback
        )

        @functools.wraps(fn)
        def serve(
            self: Any, context: Any, future_args: Any = None, **kwargs: Any
        ) -> Any:
            if future_args is not None:
                kwargs = _merge_future_args(spec, names, kwargs, future_args)
            return fn(self, context, **kwargs)

        serve.rpc_spec = spec  # type: ignore[attr-defined]
        return messaging.expose(serve)  # type: ignore[return-value]

    return decorate


def _merge_future_args(
    spec: MethodSpec, names: set[str], kwargs: dict[str, Any], future_args: Any
) -> dict[str, Any]:
    if not isinstance(future_args, dict):
        raise InvalidFutureArgs(
            f"{spec.name}: future_args must be a dict of argument names to values, "
            f"got {type(future_args).__name__}; fix the caller"
        )
    merged, ignored = dict(kwargs), []
    for key, value in future_args.items():
        if key in names and key not in kwargs:
            merged[key] = value
        else:
            ignored.append(key)
    if ignored:  # a few, shortened: the keys are the caller's to choose
        LOG.debug("%s: ignoring future_args keys %s", spec.name, reprlib.repr(ignored))
    return merged


class Endpoint:
    """Base of a binary's RPC endpoint; set ``BINARY`` and ``RPC_API_VERSION``."""

    BINARY: ClassVar[str]
    RPC_API_VERSION: ClassVar[str]
    rpc_methods: ClassVar[dict[str, MethodSpec]]
    target: ClassVar[messaging.Target]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.rpc_methods = {
            name: member.rpc_spec
            for name, member in inspect.getmembers(cls)
            if hasattr(member, "rpc_spec")
        }
        if not hasattr(cls, "RPC_API_VERSION"):
            return
        cls.target = messaging.Target(version=cls.RPC_API_VERSION)
        for spec in cls.rpc_methods.values():
            newest = max([spec.since, *spec.arg_since.values()], key=version_tuple)
            if version_tuple(newest) > version_tuple(cls.RPC_API_VERSION):
                raise TypeError(
                    f"{cls.__name__}.{spec.name} uses version {newest}, newer than "
                    f"RPC_API_VERSION {cls.RPC_API_VERSION}"
                )
