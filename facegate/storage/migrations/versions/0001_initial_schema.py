"""initial schema: every table of facegate.storage.schema

Revision ID: 0001
Revises: -
Create Date: 2026-11-26 18:41:10.311894
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=True),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('rate_limit_per_minute', sa.Integer(), nullable=True),
    sa.Column('client_id', sa.String(length=128), nullable=True),
    sa.CheckConstraint("role IN ('admin', 'operator', 'kiosk', 'app')", name='ck_api_keys_role'),
    sa.PrimaryKeyConstraint('key_id'),
    sa.UniqueConstraint('key_hash')
    )
    op.create_table('audit_log',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('ts', sa.String(length=40), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=True),
    sa.Column('operation', sa.String(length=64), nullable=False),
    sa.Column('subject_id', sa.String(length=128), nullable=True),
    sa.Column('outcome', sa.String(length=64), nullable=False),
    sa.Column('scores', sa.Text(), nullable=True),
    sa.Column('request_id', sa.String(length=128), nullable=True),
    sa.Column('client_id', sa.String(length=128), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('seq'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_log_subject_id', ['subject_id'], unique=False)

    op.create_table('change_log',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('op', sa.String(length=8), nullable=False),
    sa.Column('template_id', sa.Integer(), nullable=False),
    sa.Column('subject_pk', sa.Integer(), nullable=False),
    sa.Column('pack_id', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("op IN ('add', 'remove')", name='ck_change_log_op'),
    sa.PrimaryKeyConstraint('seq'),
    sqlite_autoincrement=True
    )
    op.create_table('import_items',
    sa.Column('item_key', sa.String(length=64), nullable=False),
    sa.Column('subject_id', sa.String(length=128), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('template_id', sa.Integer(), nullable=True),
    sa.Column('error', sa.String(length=64), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('item_key')
    )
    with op.batch_alter_table('import_items', schema=None) as batch_op:
        batch_op.create_index('ix_import_items_subject_id', ['subject_id'], unique=False)

    op.create_table('store_info',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('subjects',
    sa.Column('pk', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('subject_id', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=True),
    sa.Column('status', sa.String(length=16), server_default='active', nullable=False),
    sa.Column('metadata', sa.Text(), nullable=True),
    sa.Column('consent', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('active', 'suspended', 'deceased')", name='ck_subjects_status'),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('subject_id'),
    sqlite_autoincrement=True
    )
    op.create_table('templates',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('subject_pk', sa.Integer(), nullable=False),
    sa.Column('pack_id', sa.String(length=128), nullable=False),
    sa.Column('embedding_enc', sa.LargeBinary(), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('quality', sa.Float(), nullable=True),
    sa.Column('quality_detail', sa.Text(), nullable=True),
    sa.Column('source', sa.String(length=256), nullable=True),
    sa.Column('image_enc', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['subject_pk'], ['subjects.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.create_index('ix_templates_key_id', ['key_id'], unique=False)
        batch_op.create_index('ix_templates_pack_id', ['pack_id'], unique=False)
        batch_op.create_index('ix_templates_subject_pk', ['subject_pk'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.drop_index('ix_templates_subject_pk')
        batch_op.drop_index('ix_templates_pack_id')
        batch_op.drop_index('ix_templates_key_id')

    op.drop_table('templates')
    op.drop_table('subjects')
    op.drop_table('store_info')
    with op.batch_alter_table('import_items', schema=None) as batch_op:
        batch_op.drop_index('ix_import_items_subject_id')

    op.drop_table('import_items')
    op.drop_table('change_log')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_log_subject_id')

    op.drop_table('audit_log')
    op.drop_table('api_keys')
