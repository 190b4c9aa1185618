"""The one Alembic environment every migration tree runs in.

A service project ships only its revision scripts; rpccompat.db.tree hands
this environment the connection (or, offline, the dialect and an output
buffer for the lint) and the tree's version table through
``config.attributes``.  Each revision runs in its own transaction so a
failure leaves the database at the last whole revision.
"""

from alembic import context

attributes = context.config.attributes
options = {
    "version_table": attributes["version_table"],
    "transaction_per_migration": True,
}

if context.is_offline_mode():
    context.configure(
        dialect_name=attributes["dialect_name"],
        output_buffer=attributes["output_buffer"],
        literal_binds=True,
        **options,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    context.configure(connection=attributes["connection"], **options)
    with context.begin_transaction():
        context.run_migrations()
