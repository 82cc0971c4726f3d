"""Idempotency-Key for POST endpoints: a retried request returns the first result and never acts twice.

The record, the action and the stored response commit in ONE transaction, so there is no window in which
the action happened but the record did not (or the reverse). A concurrent duplicate waits on the unique
index, then replays the stored response. The same key with a different request body is refused (422);
failures are not recorded, so a retry after an error really retries.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from common import time as clock
from common.exceptions import ApplicationError
from common.models import IdempotencyRecord

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255

Handler = Callable[..., Response]


class _NotStored(Exception):
    """Roll the record back: the response is not one to replay (a server error)."""

    def __init__(self, response: Response) -> None:
        self.response = response


def _owner(request: Request) -> str:
    participant = getattr(request.user, "participant", None)
    if participant is not None:
        return f"p:{participant.pk}"
    return f"u:{request.user.pk}"


def _request_hash(request: Request) -> str:
    body = request.body if hasattr(request, "body") else b""
    method = (request.method or "POST").encode()
    return hashlib.sha256(b"|".join([method, request.path.encode(), body])).hexdigest()


def idempotent(handler: Handler) -> Handler:
    """Decorate an APIView POST handler to honour the Idempotency-Key header."""

    @functools.wraps(handler)
    def wrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.headers.get(HEADER)
        if not key:
            return handler(view, request, *args, **kwargs)
        if len(key) > MAX_KEY_LENGTH:
            raise ApplicationError(f"{HEADER} is at most {MAX_KEY_LENGTH} characters.", code="invalid_idempotency_key",
                                   field=HEADER)
        owner, digest = _owner(request), _request_hash(request)
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(owner=owner, key=key, method=request.method or "POST",
                                                          path=request.path, request_hash=digest)
                response = handler(view, request, *args, **kwargs)
                if response.status_code >= 500:
                    raise _NotStored(response)
                record.status_code = response.status_code
                record.response_body = json.loads(JSONRenderer().render(response.data) or b"null")
                record.save(update_fields=["status_code", "response_body"])
                return response
        except _NotStored as failed:
            return failed.response
        except IntegrityError:
            existing = IdempotencyRecord.objects.filter(owner=owner, key=key).first()
            if existing is None:
                raise  # not ours: the action itself hit a constraint
        if existing.request_hash != digest:
            raise ApplicationError(f"This {HEADER} was used for a different request.",
                                   code="idempotency_key_reused", field=HEADER, status_code=422)
        return Response(existing.response_body, status=existing.status_code, headers={REPLAY_HEADER: "true"})

    return wrapper


def idempotency_purge() -> int:
    """Delete records older than the retention window (Celery beat, hourly)."""
    cutoff = clock.now() - timedelta(hours=settings.IDEMPOTENCY_RETENTION_HOURS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted
