"""A sample volumes service in two releases, and its rolling upgrade.

``alpha`` (N-1) and ``beta`` (N) are written as two separate code bases would
be: each module knows only its own history, objects and RPC API, so a node of
either behaves as it would in its own process.  Beta differs by a new method
(``extend_volume``, with a fallback for alpha peers), a new argument carried in
``future_args`` (``description``), a new object field backported away
(``Volume.description``) and a changed child object (``Attachment.mode``).
"""
