"""The append-only, hash-chained ledger of issued statement versions.

entry_hash = SHA-256(canonical JSON {"previous_hash": ..., "sequence": ..., "statement": <document>}); the first
entry chains from 64 zeros. Rows are never updated or deleted: a PostgreSQL trigger refuses it (migration
0003), and this model refuses it on every database (save of an existing row, delete, queryset update/delete).
Raw SQL on SQLite bypasses the model guard; `manage.py verify_ledger` then finds the broken entry.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from settlement.models.statements import Statement

GENESIS_HASH = "0" * 64


class LedgerImmutableError(Exception):
    """A ledger row was about to be changed or removed."""


class LedgerQuerySet(models.QuerySet["LedgerEntry"]):
    def update(self, **kwargs: Any) -> int:
        raise LedgerImmutableError("Ledger entries are append-only: they cannot be updated.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise LedgerImmutableError("Ledger entries are append-only: they cannot be deleted.")

    def bulk_update(self, objs: Any, fields: Any, batch_size: int | None = None) -> int:
        raise LedgerImmutableError("Ledger entries are append-only: they cannot be updated.")


class LedgerEntry(models.Model):
    id = models.BigAutoField(primary_key=True)
    sequence = models.PositiveBigIntegerField(unique=True, help_text="1, 2, 3, ... in append order.")
    statement = models.OneToOneField(Statement, on_delete=models.PROTECT, related_name="ledger_entry")
    document = models.TextField(help_text="Canonical JSON of the statement version as issued.")
    document_sha256 = models.CharField(max_length=64)
    previous_hash = models.CharField(max_length=64)
    entry_hash = models.CharField(max_length=64, unique=True)
    appended_at = models.DateTimeField()

    objects = LedgerQuerySet.as_manager()

    class Meta:
        ordering = ["sequence"]
        verbose_name_plural = "ledger entries"

    def __str__(self) -> str:
        return f"ledger #{self.sequence} {self.entry_hash[:12]}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise LedgerImmutableError("Ledger entries are append-only: they cannot be updated.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise LedgerImmutableError("Ledger entries are append-only: they cannot be deleted.")
