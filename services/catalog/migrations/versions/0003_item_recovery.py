"""Recoverable inserts: a client idempotency key per item, and when the item
last changed (an insert retried long after a crash is not "stale").

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite reuses the highest rowid after a delete unless the table says
    # AUTOINCREMENT; an id must never come back (vectors are keyed by it).
    sqlite = op.get_bind().dialect.name == "sqlite"
    kwargs = {"recreate": "always", "table_kwargs": {"sqlite_autoincrement": True}} if sqlite else {}
    with op.batch_alter_table("audio_item", **kwargs) as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(128), nullable=True))
        batch.add_column(sa.Column("updated_at", sa.DateTime, nullable=True))
        # NULLs never collide, so items without a key are unconstrained.
        batch.create_unique_constraint("uq_audio_item_library_key", ["library_id", "idempotency_key"])
    op.execute("UPDATE audio_item SET updated_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table("audio_item") as batch:
        batch.drop_constraint("uq_audio_item_library_key", type_="unique")
        batch.drop_column("updated_at")
        batch.drop_column("idempotency_key")
