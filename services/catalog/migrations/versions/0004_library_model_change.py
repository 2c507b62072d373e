"""A library's move to another model in progress (the model, dimension,
window and hop its items are being re-embedded with).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL in every existing row: no move in progress. Nullable columns are
    # a plain ALTER TABLE ... ADD COLUMN on every backend, SQLite included.
    with op.batch_alter_table("library") as batch:
        batch.add_column(sa.Column("next_model_name", sa.String(64), nullable=True))
        batch.add_column(sa.Column("next_model_dim", sa.Integer, nullable=True))
        batch.add_column(sa.Column("next_window_seconds", sa.Float, nullable=True))
        batch.add_column(sa.Column("next_hop_seconds", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("library") as batch:
        batch.drop_column("next_hop_seconds")
        batch.drop_column("next_window_seconds")
        batch.drop_column("next_model_dim")
        batch.drop_column("next_model_name")
