"""Caller API keys: random 32-byte urlsafe tokens, stored only as their sha256.

The keys are long random tokens, not passwords, so one fast hash is enough: nobody can search
a 256-bit space, and lookups stay a single indexed equality.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import ApiKey

MAX_TENANT_LENGTH = 100


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(sessions: sessionmaker[Session], tenant: str) -> str:
    """A new key for `tenant` (created on first use); the only time the key is ever seen."""
    tenant = tenant.strip()
    if not tenant or len(tenant) > MAX_TENANT_LENGTH:
        raise ValueError(f"tenant name must be 1 to {MAX_TENANT_LENGTH} characters")
    key = secrets.token_urlsafe(32)
    with sessions.begin() as session:
        session.add(
            ApiKey(tenant=tenant, key_sha256=key_digest(key), created_at=datetime.now(timezone.utc))
        )
    return key


def tenant_of(session: Session, digest: str) -> str | None:
    """The tenant of the key whose `key_digest` this is; None for an unknown key."""
    return session.scalar(select(ApiKey.tenant).where(ApiKey.key_sha256 == digest))
