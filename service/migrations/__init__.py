"""Alembic migrations of the service database (a package so they ship with the install)."""
