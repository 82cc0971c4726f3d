"""Base model and the audit trail every state transition writes."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models


class BaseModel(models.Model):
    """Creation and update stamps for every domain table."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class PublicIdModel(BaseModel):
    """A domain object addressed from outside (API, portal, protocols) by a UUID, never by a counter."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)

    class Meta:
        abstract = True


class AuditEvent(models.Model):
    """Who changed what, when, and the state before and after; written in the same transaction as the change."""

    id = models.BigAutoField(primary_key=True)
    occurred_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    # For system actors (Celery tasks, protocol peers) where no user acts.
    actor_label = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=100, db_index=True)
    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT)
    object_id = models.CharField(max_length=64, db_index=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [models.Index(fields=["content_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.action} {self.content_type.model}:{self.object_id}"

    @property
    def who(self) -> str:
        return str(self.actor) if self.actor_id else (self.actor_label or "system")


def audit_payload(obj: models.Model, fields: list[str]) -> dict[str, Any]:
    """JSON-safe snapshot of the named fields of a model instance."""
    snapshot: dict[str, Any] = {}
    for name in fields:
        value = getattr(obj, name)
        if isinstance(value, models.Model):
            value = str(value.pk)
        elif value is not None and not isinstance(value, str | int | float | bool):
            value = str(value)
        snapshot[name] = value
    return snapshot


class IdempotencyRecord(models.Model):
    """The first response to a POST made with an Idempotency-Key, replayed for retries with the same key.

    `owner` is who made the request (participant id, or user id without one); the key is unique per owner.
    A row without `status_code` is a request still in progress.
    """

    id = models.BigAutoField(primary_key=True)
    owner = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="idempotency_key_unique_per_owner")]

    def __str__(self) -> str:
        return f"{self.method} {self.path} [{self.key}]"
