"""Versioned RPC on oslo.messaging, one job per module: methods and
endpoints as declared (``endpoint``), the client that calls them at the
pinned version (``client``), and the transports and servers that carry
them (``transport``)."""

from rpccompat.rpc.client import RPCClient
from rpccompat.rpc.endpoint import Endpoint, MethodSpec, method
from rpccompat.rpc.transport import make_server, make_transport, stop_server

__all__ = [
    "Endpoint",
    "MethodSpec",
    "RPCClient",
    "make_server",
    "make_transport",
    "method",
    "stop_server",
]
