"""Calls at the version the pinned peers speak.

Per call, the client picks the lowest version that carries every argument
set to a non-default value, caps it at the pin, and carries newer arguments
in ``future_args``.
"""

from __future__ import annotations

import inspect
from typing import Any

import oslo_messaging as messaging

from rpccompat.exceptions import IncompatibleCall
from rpccompat.history import version_tuple
from rpccompat.objects import Serializer, VersionedObject
from rpccompat.pins import Pin, Pins
from rpccompat.rpc.endpoint import Endpoint, MethodSpec


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
