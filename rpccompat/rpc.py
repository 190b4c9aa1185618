"""Versioned RPC on oslo.messaging: declared once, used by client and server.

A method declares the version that introduced it and, per argument, the
version that introduced the argument.  The server side accepts ``future_args``
on every method from its first version on; the client side picks, per call,
the lowest version that carries every argument set to a non-default value,
caps it at the pin, and carries newer arguments in ``future_args`` (the Heat
proposal), so an old server ignores them and a new one uses them.
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
from oslo_config import cfg

from rpccompat import compat
from rpccompat.exceptions import IncompatibleCall, InvalidFutureArgs
from rpccompat.history import version_tuple
from rpccompat.objects import Serializer, VersionedObject
from rpccompat.opts import register_messaging_opts
from rpccompat.pins import Pin, Pins

LOG = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

ALLOWED_REMOTE_EXMODS = ["rpccompat.exceptions"]


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


def make_transport(conf: cfg.ConfigOpts, url: str | None = None) -> messaging.Transport:
    """An RPC transport on ``conf``, which need not be the global ``cfg.CONF``."""
    register_messaging_opts(conf)
    transport_url = url or conf.transport_url
    if transport_url and transport_url.startswith("kombu+memory"):
        # The in-memory broker has no heartbeats to speak of.
        conf.set_override("heartbeat_timeout_threshold", 0, "oslo_messaging_rabbit")
    return messaging.get_rpc_transport(
        conf, url=transport_url, allowed_remote_exmods=ALLOWED_REMOTE_EXMODS
    )


def make_server(
    transport: messaging.Transport,
    topic: str,
    server: str,
    endpoints: list[Endpoint],
    serializer: Serializer,
) -> messaging.rpc.server.RPCServer:
    return messaging.get_rpc_server(
        transport,
        messaging.Target(topic=topic, server=server),
        endpoints,
        serializer=serializer,
        access_policy=messaging.ExplicitRPCAccessPolicy,
    )


def stop_server(server: messaging.rpc.server.RPCServer) -> None:
    """Stop serving without dropping a request the broker already sent.

    oslo.messaging's ``stop()`` only stops reading: the consumers stay
    subscribed, so RabbitMQ keeps pushing requests (all of them, at the
    default unlimited prefetch) into a socket nobody reads, and closing the
    listener's connection deletes its fanout queue, a synchronous call that
    reads those requests, acknowledges them and drops them: their callers
    time out.  Unsubscribing first stops the pushing; what came before the
    broker's cancel-ok is served, and what waits in a queue goes to another
    node or to the next process on this host.
    """
    compat.unsubscribe_before_stopping(server)
    server.stop()
    server.wait()


class RPCClient:
    """Calls a binary's endpoint at the version its pinned peers speak."""

    def __init__(
        self,
        transport: messaging.Transport,
        endpoint: type[Endpoint],
        pins: Pins,
        objects: type[VersionedObject],
        *,
        topic: str | None = None,
        timeout: float | None = None,
        server: str | None = None,
    ) -> None:
        self.transport = transport
        self.endpoint = endpoint
        self.pins = pins
        self.objects = objects
        self.binary = endpoint.BINARY
        pins.history.rpc_version(self.binary)  # a clear error if it has none
        self.topic = topic or endpoint.BINARY
        self.timeout = timeout
        self.server = server
        self._clients: dict[tuple[str, str], messaging.RPCClient] = {}

    def prepare(
        self, *, server: str | None = None, timeout: float | None = None
    ) -> RPCClient:
        """A copy that sends to one server, or with another timeout."""
        clone = RPCClient(
            self.transport,
            self.endpoint,
            self.pins,
            self.objects,
            topic=self.topic,
            timeout=timeout or self.timeout,
            server=server or self.server,
        )
        clone._clients = self._clients
        return clone

    def call(self, context: Any, method: str, **kwargs: Any) -> Any:
        """Send and wait for the reply (or the remote error)."""
        return self._send("call", context, method, kwargs)

    def cast(self, context: Any, method: str, **kwargs: Any) -> None:
        """Send without waiting."""
        self._send("cast", context, method, kwargs)

    def can_send(self, method: str, arg: str | None = None) -> bool:
        """Whether the pinned peers have ``method``, or its argument ``arg``
        (to skip optional work: an argument they lack would go in
        ``future_args``, which they ignore)."""
        spec = self._spec(method)
        if arg is not None and arg not in spec.arg_since:
            signature = inspect.signature(getattr(self.endpoint, method))
            if arg not in signature.parameters:
                raise TypeError(f"{self.endpoint.__name__}.{method} has no {arg!r}")
        since = spec.since if arg is None else spec.version_for(arg)
        pin = self.pins.get(self.binary)
        return version_tuple(since) <= version_tuple(pin.rpc_version)

    def _spec(self, method: str) -> MethodSpec:
        try:
            return self.endpoint.rpc_methods[method]
        except KeyError:
            raise TypeError(
                f"{self.endpoint.__name__} has no RPC method {method!r}; "
                f"methods: {', '.join(sorted(self.endpoint.rpc_methods))}"
            ) from None

    def _send(
        self, kind: str, context: Any, method: str, kwargs: dict[str, Any]
    ) -> Any:
        spec = self._spec(method)
        pin = self.pins.get(self.binary)
        cap = version_tuple(pin.rpc_version)
        if version_tuple(spec.since) > cap:
            if spec.fallback is not None:
                return spec.fallback(self, context, **kwargs)
            raise IncompatibleCall(
                f"cannot call {self.binary}.{method}: it needs RPC {spec.since}, but "
                f"{self.binary} is pinned to {pin.rpc_version} ({pin.release}), "
                f"{pin.lifted_by()}"
            )
        version, message = spec.since, {}
        future_args: dict[str, Any] = {}
        for arg, value in kwargs.items():
            arg_version = spec.version_for(arg)
            if version_tuple(arg_version) <= version_tuple(spec.since):
                message[arg] = value
            elif spec.is_default(arg, value):
                continue  # the server's default already says it
            elif version_tuple(arg_version) <= cap:
                message[arg] = value
                version = max(version, arg_version, key=version_tuple)
            elif arg in spec.required:
                raise IncompatibleCall(
                    f"cannot call {self.binary}.{method} with {arg}: the argument "
                    f"is required, so it may not be dropped, and needs RPC "
                    f"{arg_version}, but {self.binary} is pinned to "
                    f"{pin.rpc_version} ({pin.release}), {pin.lifted_by()}"
                )
            else:
                future_args[arg] = value
        if future_args:
            message["future_args"] = future_args
        client = self._client_for(pin).prepare(
            version=version, server=self.server, timeout=self.timeout
        )
        return getattr(client, kind)(context, method, **message)

    def _client_for(self, pin: Pin) -> messaging.RPCClient:
        key = (pin.rpc_version, pin.objects_version)
        client = self._clients.get(key)
        if client is None:
            client = messaging.get_rpc_client(
                self.transport,
                messaging.Target(topic=self.topic),
                version_cap=pin.rpc_version,
                serializer=Serializer(self.objects, self.pins.history, pin.manifest),
            )
            self._clients[key] = client
        return client
