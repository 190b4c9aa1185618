"""A sample volumes service in three releases, and its rolling upgrade.

``alpha`` (N-1), ``beta`` (N) and ``gamma`` (N+1) are written as separate
code bases would be: each module knows only its own history, objects and RPC
API, so a node of any behaves as it would in its own process.  Beta differs
by a new method (``extend_volume``, with a fallback for alpha peers), a new
argument carried in ``future_args`` (``description``), a new object field
backported away (``Volume.description``) and a changed child object
(``Attachment.mode``).  Gamma adds an argument that may not be dropped
(``create_volume``'s ``bootable``) and one that may (``attach_volume``'s
``device_type``), another field (``Volume.bootable``), changes the child
again (``Attachment.device_type``) and widens ``size`` in the database; it
reads through beta's rename and its own change at once, as a skip-level
upgrade from alpha needs.
"""
