"""Per-participant API keys: issued once in clear, stored as a SHA-256 hash, revocable, limited by scopes.

Key format: ``fmk_<prefix>_<secret>``. The prefix (12 hex) is stored in clear to find the row and to show
which key is which; the whole key is hashed. Keys carry long random secrets, so a plain SHA-256 (not a slow
password hash) is the right tool: it keeps authentication cheap on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

from django.db import transaction

from common import time as clock
from common.audit import audit_record
from common.exceptions import ApplicationError, TransitionError
from market.models import ApiKey, Participant, User

KEY_PREFIX = "fmk"

# What each role may do at all; a key may be narrowed to a subset, a user token has all of its role's scopes.
SCOPES_BY_ROLE: dict[str, frozenset[str]] = {
    Participant.Role.AGR: frozenset({"market:read", "offers:write", "prognoses:write", "settlement:read",
                                     "portfolio:read", "drivers:write", "disputes:write"}),
    Participant.Role.DSO: frozenset(
        {"market:read", "requests:write", "orders:write", "contracts:write", "settlement:read", "disputes:write",
         "meter-data:write"}
    ),
}


def role_scopes(participant: Participant) -> frozenset[str]:
    return SCOPES_BY_ROLE.get(participant.role, frozenset())


def _hash(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


@transaction.atomic
def api_key_create(
    *, participant: Participant, name: str, scopes: Iterable[str] | None = None, actor: User | None = None
) -> tuple[ApiKey, str]:
    """Issue a key; returns the row and the key in clear (shown this once, never stored)."""
    allowed = role_scopes(participant)
    wanted = set(scopes) if scopes is not None else set(allowed)
    unknown = sorted(wanted - allowed)
    if unknown:
        raise ApplicationError(f"Scopes not available to a {participant.role}: {', '.join(unknown)}.",
                               code="invalid_scope", field="scopes")
    if not wanted:
        raise ApplicationError("A key needs at least one scope.", code="invalid_scope", field="scopes")
    if ApiKey.objects.filter(participant=participant, name=name, revoked_at__isnull=True).exists():
        raise ApplicationError("A live key with this name exists.", code="duplicate_name", field="name")
    prefix = secrets.token_hex(6)
    raw_key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey.objects.create(participant=participant, name=name, prefix=prefix, key_hash=_hash(raw_key),
                                    scopes=sorted(wanted), created_by=actor)
    audit_record(obj=api_key, action="api_key.created", actor=actor,
                 after={"name": name, "prefix": prefix, "scopes": sorted(wanted)})
    return api_key, raw_key


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor: User | None = None) -> ApiKey:
    claimed = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=clock.now())
    api_key.refresh_from_db()
    if claimed != 1:
        raise TransitionError("The key is already revoked.", code="already_revoked")
    audit_record(obj=api_key, action="api_key.revoked", actor=actor, before={"revoked_at": None},
                 after={"revoked_at": api_key.revoked_at.isoformat() if api_key.revoked_at else None})
    return api_key


LAST_USED_RESOLUTION_S = 60  # write last_used_at at most once a minute per key: no write on every request


def api_key_authenticate(raw_key: str) -> ApiKey | None:
    """The live key matching `raw_key`, or None. Constant-time comparison of the hashes."""
    parts = raw_key.split("_", 2)  # the secret is url-safe base64 and may itself contain '_'
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        return None
    api_key = ApiKey.objects.select_related("participant").filter(prefix=parts[1], revoked_at__isnull=True).first()
    if api_key is None or not hmac.compare_digest(api_key.key_hash, _hash(raw_key)):
        return None
    if not api_key.participant.is_active:
        return None
    at = clock.now()
    if api_key.last_used_at is None or (at - api_key.last_used_at).total_seconds() > LAST_USED_RESOLUTION_S:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=at)
    return api_key
