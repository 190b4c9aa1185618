"""The private parts of oslo.messaging and oslo.versionedobjects rpccompat
uses, in one place.

Each is looked up once, when first needed.  Where a library release no
longer has one, rpccompat does what the public API allows and logs one
warning saying what is lost.  :func:`missing` names what is not there;
tests/test_compat.py, the canary, checks it names nothing on the current
libraries and on the older ones of ``.venv-alpha``.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from oslo_config import cfg
from oslo_versionedobjects import base as ovo_base

LOG = logging.getLogger(__name__)


def _init_uses(cls_path: str, attribute: str) -> bool:
    """Whether ``module.Class.__init__`` uses ``attribute`` (a private one,
    on instances only, so it is looked for in the code that sets it)."""
    module, _, name = cls_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    return _method_uses(cls, "__init__", attribute)


def _method_uses(cls: type, method: str, attribute: str) -> bool:
    """Whether ``cls.method`` exists and uses ``attribute``."""
    code = getattr(getattr(cls, method, None), "__code__", None)
    return code is not None and attribute in code.co_names


#: What each capability is, what is lost without it, and how to check it.
CAPABILITIES: dict[str, tuple[str, Callable[[], bool]]] = {
    "unsubscribe before stopping": (
        "a stopping node's unread requests are dropped, and their callers "
        "time out, instead of going to another node",
        lambda: all(
            _init_uses(cls, attribute)
            for cls, attribute in (
                (
                    "oslo_messaging._drivers.base.PollStyleListenerAdapter",
                    "_poll_style_listener",
                ),
                (
                    "oslo_messaging._drivers.amqpdriver.AMQPListener",
                    "_message_operations_handler",
                ),
                ("oslo_messaging._drivers.impl_rabbit.Connection", "_consumers"),
            )
        ),
    ),
    "object registration": (
        "a release's registry cannot register its classes",
        lambda: _method_uses(
            ovo_base.VersionedObjectRegistry, "_register_class", "_obj_classes"
        ),
    ),
}


@functools.cache
def has(capability: str) -> bool:
    """Whether the libraries have it; warns once when they do not."""
    lost, check = CAPABILITIES[capability]
    if check():
        return True
    LOG.warning(
        "the installed oslo libraries lack what rpccompat uses for %s: %s; "
        "upgrade them to a release rpccompat supports",
        capability,
        lost,
    )
    return False


def missing() -> list[str]:
    """The capabilities the installed libraries lack."""
    return [name for name, (_, check) in CAPABILITIES.items() if not check()]


def unsubscribe_before_stopping(server: Any) -> None:
    """Have the listener's thread cancel its consumers on its next turn.

    A listening connection has no lock (it has a single reader), so the
    cancel goes on the listener's message operations: its thread runs them
    at every turn of its poll loop, and once more after ``stop()`` before it
    hands on the last requests it received and reports itself stopped.
    """
    if not has("unsubscribe before stopping"):
        return
    from oslo_messaging._drivers import amqpdriver

    listener = getattr(server.listener, "_poll_style_listener", None)
    if isinstance(listener, amqpdriver.AMQPListener):  # pushed to, ahead of reads
        connection = listener.conn.connection
        listener._message_operations_handler.do(lambda: _cancel(connection))


def _cancel(connection: Any) -> None:
    """basic.cancel every consumer, in the listener's thread.

    What the broker sent before its cancel-ok is read while waiting for it
    and handed on like any request; nothing is sent after it.
    """
    try:
        for consumer, tag in connection._consumers.items():
            consumer.cancel(tag)
    except Exception:
        LOG.exception("could not unsubscribe before stopping")


def register_class(registry: ovo_base.VersionedObjectRegistry, cls: type) -> None:
    """oslo.versionedobjects' registration (field properties, newest
    first), into ``registry``'s own store."""
    if not has("object registration"):
        raise TypeError(
            "this oslo.versionedobjects has no VersionedObjectRegistry."
            "_register_class: install a release rpccompat supports"
        )
    registry._register_class(cls)


def driver_options() -> Iterator[tuple[str, list[cfg.Opt]]]:
    """oslo.messaging's metrics and tracing options, as (group, opts).

    It registers them on ``cfg.CONF`` only, yet its drivers read them from
    whichever conf they are given.  An older release without one of those
    features has nothing to register for it: nothing is lost.
    """
    for module, group in (
        ("oslo_messaging._metrics.client", "oslo_messaging_metrics"),
        ("oslo_messaging._tracing.client", "oslo_messaging_tracing"),
    ):
        try:
            yield group, getattr(importlib.import_module(module), group)
        except (ImportError, AttributeError):
            continue
