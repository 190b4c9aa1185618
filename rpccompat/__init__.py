"""rpccompat: rolling, zero-downtime upgrades on oslo.messaging and SQL.

Everything a service developer touches::

    from rpccompat import History, Release, Endpoint, method, Service
    from rpccompat import ObjectRegistry, VersionedObject, retry_on_disconnect
"""

from rpccompat.engine import retry_on_disconnect
from rpccompat.exceptions import (
    ConfigurationError,
    HistoryError,
    IncompatibleCall,
    IncompatibleObject,
    InvalidFutureArgs,
    InvalidRPCInput,
    RPCCompatError,
    SchemaRefused,
    ServiceNotFound,
    UnknownRelease,
    UnknownVersion,
)
from rpccompat.history import History, Release
from rpccompat.objects import ObjectRegistry, Serializer, VersionedObject
from rpccompat.pins import Pin, Pins
from rpccompat.registry import ServiceInfo, ServiceRegistry
from rpccompat.rpc import Endpoint, RPCClient, method
from rpccompat.service import Service

__all__ = [
    "ConfigurationError",
    "Endpoint",
    "History",
    "HistoryError",
    "IncompatibleCall",
    "IncompatibleObject",
    "InvalidFutureArgs",
    "InvalidRPCInput",
    "ObjectRegistry",
    "Pin",
    "Pins",
    "RPCClient",
    "RPCCompatError",
    "Release",
    "SchemaRefused",
    "Serializer",
    "Service",
    "ServiceInfo",
    "ServiceNotFound",
    "ServiceRegistry",
    "UnknownRelease",
    "UnknownVersion",
    "VersionedObject",
    "method",
    "retry_on_disconnect",
]
