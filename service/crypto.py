"""Teacher API keys at rest: encrypted with the server's key, decrypted by the worker.

A job's teacher API key is stored only as a Fernet token (AES-128-CBC with an HMAC-SHA256), so
no copy of the database (a dump, a backup, the SQLite WAL, PostgreSQL's dead tuples and WAL)
holds it in clear. The server's key is the `encryption_key` setting; without it, a SQLite
database gets a key generated once into `encryption.key` beside it (see the setting).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy.engine import make_url

from service.settings import ENV_PREFIX, ServiceSettings

KEY_FILENAME = "encryption.key"
SETTING = f"{ENV_PREFIX}ENCRYPTION_KEY"
MAKE_ONE = (
    'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
)


class UnreadableKey(ValueError):
    """A stored teacher API key that none of the server's keys decrypts."""


class KeyCipher:
    """Encrypts teacher API keys with the first server key; decrypts with any of them."""

    def __init__(self, keys: list[bytes]) -> None:
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken:
            raise UnreadableKey(
                "the teacher API key cannot be decrypted: the server's encryption key"
                f" ({SETTING} or {KEY_FILENAME}) changed since the job was queued;"
                " submit the job again"
            ) from None


def teacher_key_cipher(settings: ServiceSettings) -> KeyCipher:
    """The cipher of the `encryption_key` setting or, unset, of the SQLite database's key file.

    Raises ValueError (naming the setting, never showing a key) when it cannot be built.
    """
    if settings.encryption_key is not None:
        value = settings.encryption_key.get_secret_value()
        return _cipher([key.strip().encode() for key in value.split(",") if key.strip()], SETTING)
    url = make_url(settings.database())
    if url.get_backend_name() != "sqlite":
        raise ValueError(
            f"{SETTING} is required with a {url.get_backend_name()} database: the API and every"
            f" worker must share one key. Make one with {MAKE_ONE}"
        )
    if not url.database or url.database == ":memory:":
        return KeyCipher([Fernet.generate_key()])  # the database dies with the process
    path = Path(url.database).parent / KEY_FILENAME
    return _cipher([_key_file(path)], str(path))


def _cipher(keys: list[bytes], where: str) -> KeyCipher:
    try:
        return KeyCipher(keys)
    except ValueError:  # binascii.Error too; Fernet's message never shows the key either
        raise ValueError(
            f"{where}: not a Fernet key (32 url-safe base64-encoded bytes);"
            f" make one with {MAKE_ONE}"
        ) from None


def _key_file(path: Path) -> bytes:
    """The key kept in `path`, generated there (mode 0600) by the first process that needs it.

    The key is written to a private draft first and linked into place, so a process never reads
    a half-written key and two processes starting together end up with the same one.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(Fernet.generate_key())
                file.flush()
                os.fsync(file.fileno())
            os.link(draft, path)  # atomic, and never replaces a key another process made
        except FileExistsError:
            pass
        finally:
            draft.unlink(missing_ok=True)
    return path.read_bytes().strip()
