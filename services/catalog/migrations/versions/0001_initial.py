"""Initial schema: libraries, audio items, item tags.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "library",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_dim", sa.Integer, nullable=False),
        sa.Column("description", sa.String(1024), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "audio_item",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("library_id", Id, sa.ForeignKey("library.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("source_uri", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("duration_seconds", sa.Float, nullable=False),
        sa.Column("sample_rate", sa.Integer, nullable=False),
        sa.Column("channels", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("library_id", "sha256", name="uq_audio_item_library_sha256"),
    )
    op.create_index("ix_audio_item_library_state", "audio_item", ["library_id", "state"])
    op.create_table(
        "item_tag",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("item_id", Id, sa.ForeignKey("audio_item.id", ondelete="CASCADE"), nullable=False),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
    )
    op.create_index("ix_item_tag_label", "item_tag", ["label"])
    op.create_index("ix_item_tag_item_id", "item_tag", ["item_id"])


def downgrade() -> None:
    op.drop_table("item_tag")
    op.drop_table("audio_item")
    op.drop_table("library")
