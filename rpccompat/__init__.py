"""rpccompat: rolling, zero-downtime upgrades on oslo.messaging and SQL.

Everything a service developer touches::

    from rpccompat import History, Release, Endpoint, method, Service
    from rpccompat import ObjectRegistry, VersionedObject, retry_on_disconnect
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from rpccompat.opts import register_opts
    from rpccompat.pins import Pin, Pins
    from rpccompat.registry import ServiceInfo, ServiceRegistry
    from rpccompat.rpc import Endpoint, RPCClient, method
    from rpccompat.service import Service

# Where each name lives: imported on first use, so that ``import
# rpccompat.db`` (every revision script does) does not load the RPC stack.
_EXPORTS = {
    "rpccompat.engine": ("retry_on_disconnect",),
    "rpccompat.exceptions": (
        "ConfigurationError",
        "HistoryError",
        "IncompatibleCall",
        "IncompatibleObject",
        "InvalidFutureArgs",
        "InvalidRPCInput",
        "RPCCompatError",
        "SchemaRefused",
        "ServiceNotFound",
        "UnknownRelease",
        "UnknownVersion",
    ),
    "rpccompat.history": ("History", "Release"),
    "rpccompat.objects": ("ObjectRegistry", "Serializer", "VersionedObject"),
    "rpccompat.opts": ("register_opts",),
    "rpccompat.pins": ("Pin", "Pins"),
    "rpccompat.registry": ("ServiceInfo", "ServiceRegistry"),
    "rpccompat.rpc": ("Endpoint", "RPCClient", "method"),
    "rpccompat.service": ("Service",),
}
_HOMES = {name: module for module, names in _EXPORTS.items() for name in names}
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
    "register_opts",
    "retry_on_disconnect",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'rpccompat' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
