"""tests.revision: a counter of changes to what defines a test

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 18:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Per-process caches of a resolved test are keyed by this counter, so a model added to the
    # test by another process is seen at once; it also lets a promotion write the spec only if
    # nobody changed it since it was read.
    with op.batch_alter_table("tests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("tests", schema=None) as batch_op:
        batch_op.drop_column("revision")
