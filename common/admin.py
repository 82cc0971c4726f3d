"""The admin as operations console: site titles, the read-only audit log and helpers the app admins share.

Rules every app admin follows (see DESIGN.md):
- `status` fields change only through services, so they are read-only everywhere.
- Issued and binding documents (orders, offers, settlement) are read-only: `ReadOnlyAdminMixin`.
- Secrets (tokens) never appear in lists and show only their last 4 characters on change forms: `mask_secret`.
- Audited objects show their audit trail on the change page (`AuditTrailAdminMixin`), and changes made
  through the admin are themselves written to the audit trail.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections, models
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from common.audit import audit_record, audit_trail
from common.models import AuditEvent, IdempotencyRecord

admin.site.site_header = "Flexmarket console"
admin.site.site_title = "Flexmarket console"
admin.site.index_title = "Operations"

EMPTY = "-"


# --- shared helpers -----------------------------------------------------------------------------------


def mask_secret(value: str | None) -> str:
    """Show a secret as bullets plus its last 4 characters; short secrets are fully masked."""
    if not value:
        return EMPTY
    if len(value) <= 8:
        return "\u2022" * 8
    return "\u2022" * 8 + value[-4:]


def _change_summary(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    """`status: open -> ordered; price_eur: 12.50` from an event's before/after snapshots."""
    after = after or {}
    before = before or {}
    parts = []
    for key, value in after.items():
        if key in before and before[key] != value:
            parts.append(f"{key}: {before[key]} \u2192 {value}")
        elif key not in before:
            parts.append(f"{key}: {value}")
    return "; ".join(parts)


def audit_trail_html(obj: models.Model) -> SafeString:
    """An object's audit trail as a small HTML table, newest first (every value escaped)."""
    if obj.pk is None:
        return format_html("{}", EMPTY)
    events = list(audit_trail(obj))
    if not events:
        return format_html("{}", "No audit events.")
    rows: Iterator[tuple[str, str, str, str]] = (
        (
            timezone.localtime(event.occurred_at).strftime("%Y-%m-%d %H:%M:%S %Z"),
            event.action,
            event.who,
            _change_summary(event.before, event.after),
        )
        for event in events
    )
    body = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
    return format_html(
        '<table class="audit-trail"><thead><tr><th>When</th><th>Action</th><th>Who</th><th>Change</th></tr>'
        "</thead><tbody>{}</tbody></table>",
        body,
    )


class EstimatedCountPaginator(Paginator):
    """For tables of millions of rows: an unfiltered PostgreSQL list uses the planner's row estimate.

    Note: even with show_full_result_count = False the changelist counts its rows once to paginate; on
    PostgreSQL an unfiltered COUNT(*) reads the whole table. Filtered lists (search, filters) and small
    or never-analysed tables (reltuples < 0 or under the threshold) get the exact count.
    """

    exact_below = 100_000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if isinstance(queryset, models.QuerySet) and not queryset.query.where:
            connection = connections[queryset.db]
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                        [queryset.model._meta.db_table],
                    )
                    row = cursor.fetchone()
                if row and row[0] >= self.exact_below:
                    return int(row[0])
        return super().count


class ReadOnlyAdminMixin:
    """Nobody adds, changes or deletes through the admin; users with view permission can look."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyTabularInline(ReadOnlyAdminMixin, admin.TabularInline):
    """An inline of rows that are part of a binding or issued document: shown, never edited."""

    extra = 0
    can_delete = False
    show_change_link = False


class AuditTrailAdminMixin:
    """Adds a read-only `audit_trail_table` field and records admin edits in the audit trail."""

    @admin.display(description="Audit trail")
    def audit_trail_table(self, obj: models.Model) -> SafeString:
        return audit_trail_html(obj)

    def _audit_admin_edit(self, request: HttpRequest, obj: models.Model, message: Any, action: str) -> None:
        # Note: the admin's change views run in one transaction, so this lands with the change itself.
        if message:
            audit_record(obj=obj, action=action, actor=request.user, after={"admin": message})

    def log_addition(self, request: HttpRequest, obj: models.Model, message: Any) -> Any:
        entry = super().log_addition(request, obj, message)  # type: ignore[misc]
        self._audit_admin_edit(request, obj, message, "admin.created")
        return entry

    def log_change(self, request: HttpRequest, obj: models.Model, message: Any) -> Any:
        entry = super().log_change(request, obj, message)  # type: ignore[misc]
        self._audit_admin_edit(request, obj, message, "admin.changed")
        return entry


# --- the audit log ------------------------------------------------------------------------------------


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The audit log: append-only, so view-only here."""

    list_display = ("occurred_at", "action", "object_link", "who_display")
    list_filter = ("action", ("content_type", admin.RelatedOnlyFieldListFilter))
    search_fields = ("=object_id", "action", "actor__username", "actor_label")
    date_hierarchy = "occurred_at"
    list_select_related = ("actor", "content_type")
    show_full_result_count = False
    fields = ("occurred_at", "action", "object_link", "who_display", "actor", "actor_label", "before", "after")
    readonly_fields = fields

    @admin.display(description="Object", ordering="object_id")
    def object_link(self, event: AuditEvent) -> str:
        label = f"{event.content_type.app_label}.{event.content_type.model} {event.object_id}"
        try:
            url = reverse(
                f"admin:{event.content_type.app_label}_{event.content_type.model}_change", args=[event.object_id]
            )
        except NoReverseMatch:
            return label
        return format_html('<a href="{}">{}</a>', url, label)

    @admin.display(description="Who")
    def who_display(self, event: AuditEvent) -> str:
        return event.who


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Replays of POSTs made with an Idempotency-Key (purged after IDEMPOTENCY_RETENTION_HOURS)."""

    list_display = ("created_at", "owner", "method", "path", "key", "status_code")
    list_filter = ("method", "status_code")
    search_fields = ("=key", "owner", "path")
    date_hierarchy = "created_at"
    show_full_result_count = False
