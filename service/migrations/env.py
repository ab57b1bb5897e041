"""Alembic environment: migrate the connection the service hands over, else the configured URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from service.crypto import teacher_key_cipher
from service.db.engine import make_engine
from service.db.models import Base
from service.settings import ServiceSettings


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
    )
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is not None:
    run(given)
else:  # `alembic upgrade` by hand: the service's own settings, encryption key included
    settings = ServiceSettings()
    context.config.attributes.setdefault("cipher", teacher_key_cipher(settings))
    with make_engine(settings.database()).connect() as connection:
        run(connection)
        connection.commit()
