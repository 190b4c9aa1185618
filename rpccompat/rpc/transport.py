"""oslo.messaging transports and servers, on any ``ConfigOpts``."""

from __future__ import annotations

import oslo_messaging as messaging
from oslo_config import cfg

from rpccompat import compat
from rpccompat.objects import Serializer
from rpccompat.opts import register_messaging_opts
from rpccompat.rpc.endpoint import Endpoint

ALLOWED_REMOTE_EXMODS = ["rpccompat.exceptions"]


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
