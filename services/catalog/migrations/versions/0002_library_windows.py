"""Per-library window length and hop.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing libraries get 0: "the model's defaults", which is what they used.
    with op.batch_alter_table("library") as batch:
        batch.add_column(sa.Column("window_seconds", sa.Float, nullable=False, server_default="0"))
        batch.add_column(sa.Column("hop_seconds", sa.Float, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("library") as batch:
        batch.drop_column("hop_seconds")
        batch.drop_column("window_seconds")
