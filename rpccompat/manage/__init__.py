"""``rpccompat-manage``: the operator's commands for a rolling upgrade.

``service list|remove|disable|enable|force-down``, ``db expand|migrate|
contract|version|check|sync|lint|online_data_migrations`` and ``upgrade
check``, on oslo.config (``--config-file``, ``--db-url``,
``--transport-url``).  A service mounts the same commands in its own tool::

    from rpccompat.manage import Manage

    def main():
        return Manage(prog="volumes-manage", project="volumes", trees=[TREE]).main()

Each module is one category of commands; ``cli`` parses and dispatches.
"""

from rpccompat.manage.base import BAD_INPUT, ERROR, NOT_FOUND, OK, Context
from rpccompat.manage.cli import Manage, main

__all__ = ["BAD_INPUT", "ERROR", "NOT_FOUND", "OK", "Context", "Manage", "main"]
