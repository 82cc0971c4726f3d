"""Credentials tokens encrypted at rest.

OCPI needs our peers' tokens in clear: we send token B/C in every Authorization header and `GET credentials`
returns the token the peer uses, so a one-way hash cannot hold them (ocpi/ocpi issue #394). They are stored
Fernet-encrypted (AES-128-CBC + HMAC-SHA256) with a key from settings.FIELD_ENCRYPTION_KEY (derived from
SECRET_KEY when unset), and looked up through a keyed digest (HMAC-SHA256), which is deterministic and so can
carry a unique index, unlike the ciphertext.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models

PREFIX = "fernet:"


def _key_material(secret: str) -> bytes:
    """A Fernet key: the configured key if it already is one, else SHA-256 of the secret (32 bytes, urlsafe b64)."""
    try:
        if len(base64.urlsafe_b64decode(secret.encode("ascii"))) == 32:
            return secret.encode("ascii")
    except (ValueError, UnicodeEncodeError):
        pass
    return base64.urlsafe_b64encode(hashlib.sha256(("flexmarket-field-encryption:" + secret).encode()).digest())


@lru_cache(maxsize=8)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(_key_material(key)) for key in keys])


def _keys() -> tuple[str, ...]:
    """The current key first, then older ones (FIELD_ENCRYPTION_KEY may list several, comma-separated, for rotation)."""
    configured = [key.strip() for key in (settings.FIELD_ENCRYPTION_KEY or "").split(",") if key.strip()]
    return tuple(configured or [settings.SECRET_KEY])


def encrypt(plain: str) -> str:
    return PREFIX + _fernet(_keys()).encrypt(plain.encode("utf-8")).decode("ascii")


def decrypt(stored: str) -> str:
    """Plain text of a stored value; a value without the prefix is a legacy plaintext row (read as is)."""
    if not stored.startswith(PREFIX):
        return stored
    try:
        return _fernet(_keys()).decrypt(stored[len(PREFIX):].encode("ascii")).decode("utf-8")
    except InvalidToken as exc:
        raise ValueError("cannot decrypt a stored credential: FIELD_ENCRYPTION_KEY changed without keeping the old key") from exc


def token_digest(token: str) -> str:
    """Deterministic keyed digest of a token, for unique indexes and lookups (never reversible)."""
    key = _key_material(_keys()[0])
    return hmac.new(key, token.encode("utf-8"), hashlib.sha256).hexdigest()


class EncryptedTokenField(models.TextField):
    """A text field holding a secret: encrypted in the database, plain on the model instance.

    Filtering on it cannot work (ciphertexts differ each time): look tokens up through a digest field.
    """

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        return None if value is None else decrypt(value)

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and value.startswith(PREFIX):
            return decrypt(value)
        return value

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value in (None, ""):
            return value
        return encrypt(str(value))
