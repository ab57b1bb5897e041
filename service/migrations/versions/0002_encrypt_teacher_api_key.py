"""Teacher API keys encrypted at rest: `jobs.teacher_api_key` becomes `teacher_api_key_encrypted`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

The clear key of every job that has not ended is encrypted into the new column with the cipher
`service.db.engine.migrate` hands over (`recmimic serve` and `recmimic worker` do), then the
clear column is dropped: under its new name, an older process still running fails loudly
instead of writing a clear key beside encrypted ones. Ended jobs' keys were NULL already, but
old copies may remain in the database's files: `migrate` rewrites them once this revision ran
(VACUUM on SQLite, VACUUM FULL jobs on PostgreSQL; run by hand with `alembic upgrade`, do the
same afterwards). PostgreSQL's WAL keeps its copies until the server recycles its segments, and
backups taken before keep theirs.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

jobs = sa.table(
    "jobs",
    sa.column("id", sa.String()),
    sa.column("teacher_api_key", sa.Text()),
    sa.column("teacher_api_key_encrypted", sa.Text()),
)


def upgrade() -> None:
    connection = op.get_bind()
    clear = connection.execute(
        sa.select(jobs.c.id, jobs.c.teacher_api_key).where(jobs.c.teacher_api_key.is_not(None))
    ).all()
    cipher = context.config.attributes.get("cipher")
    if clear and cipher is None:  # checked first: SQLite's DDL would not roll back
        raise ValueError(  # a one-line error from the CLI
            f"{len(clear)} unfinished jobs hold a teacher API key in clear: start `recmimic"
            " serve` or `recmimic worker`, which migrate with the encryption key, to encrypt them"
        )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("teacher_api_key_encrypted", sa.Text(), nullable=True))
    for job_id, key in clear:
        connection.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id)
            .values(teacher_api_key_encrypted=cipher.encrypt(key), teacher_api_key=None)
        )
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("teacher_api_key")
    context.config.attributes["scrub"] = True  # see the docstring


def downgrade() -> None:
    """Back to 0001 without the keys: unfinished jobs then fail for want of one."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("teacher_api_key", sa.Text(), nullable=True))
        batch.drop_column("teacher_api_key_encrypted")
