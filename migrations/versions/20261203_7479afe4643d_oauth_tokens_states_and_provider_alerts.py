"""oauth tokens, states and provider alerts

Revision ID: 7479afe4643d
Revises: 2d356ae3262c
Create Date: 2026-12-03 15:20:41.325698
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7479afe4643d"
down_revision: str | None = "2d356ae3262c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oauth_states",
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("code_verifier_enc", sa.LargeBinary(), nullable=False),
        sa.Column("return_url", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("state_hash", name=op.f("pk_oauth_states")),
    )
    with op.batch_alter_table("oauth_states", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_oauth_states_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "provider_alerts",
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider", name=op.f("pk_provider_alerts")),
    )
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("oauth_account_email", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("oauth_scopes", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("oauth_authorized_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("oauth_access_token_enc", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("oauth_refresh_token_enc", sa.LargeBinary(), nullable=True))
        batch_op.add_column(
            sa.Column("oauth_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("token_version", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("refresh_lock_until", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.drop_column("refresh_lock_until")
        batch_op.drop_column("token_version")
        batch_op.drop_column("oauth_expires_at")
        batch_op.drop_column("oauth_refresh_token_enc")
        batch_op.drop_column("oauth_access_token_enc")
        batch_op.drop_column("oauth_authorized_at")
        batch_op.drop_column("oauth_scopes")
        batch_op.drop_column("oauth_account_email")

    op.drop_table("provider_alerts")
    with op.batch_alter_table("oauth_states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_states_expires_at"))

    op.drop_table("oauth_states")
