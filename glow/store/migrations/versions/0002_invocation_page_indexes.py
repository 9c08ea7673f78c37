"""keyset-page indexes on invocations

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 04:20:00.000000
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Pages of a test's invocations are keyset-paged by invocation_id (optionally by status or
    # model): without these, SQLite finds the test's rows by (test_id, status) and sorts them all
    # for every page.
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.create_index("ix_invocations_test_id", ["test_id", "invocation_id"], unique=False)
        batch_op.create_index(
            "ix_invocations_test_status_id", ["test_id", "status", "invocation_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.drop_index("ix_invocations_test_status_id")
        batch_op.drop_index("ix_invocations_test_id")
