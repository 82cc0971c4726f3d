"""API plumbing shared by every app: the error contract, role permissions, pagination."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, serializers, status
from rest_framework.fields import SkipField, empty, get_error_detail
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from common.exceptions import ApplicationError


def _first_field_error(detail: Any, prefix: str = "") -> tuple[str | None, str, str]:
    """Walk DRF's nested error detail to the first leaf: (field path, message, code)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if isinstance(key, int):  # DRF keys nested list errors by index: write them like the services do
                path = f"{prefix}[{key}]"
            else:
                path = key if not prefix else f"{prefix}.{key}"
            if key == "non_field_errors":
                path = prefix
            return _first_field_error(value, path)
    if isinstance(detail, list) and detail:
        for index, value in enumerate(detail):
            if value:  # skip empty entries of list serializers
                path = prefix if not isinstance(value, dict) else f"{prefix}[{index}]"
                return _first_field_error(value, path)
    code = getattr(detail, "code", "invalid") or "invalid"
    return (prefix or None), str(detail), str(code)


def error_body(*, code: str, message: str, field: str | None = None, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message, "field": field}
    if details is not None:
        body["details"] = details
    return {"error": body}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """One error contract for every API error: HTTP status + {"error": {code, message, field}}."""
    if isinstance(exc, ApplicationError):
        return Response(
            error_body(code=exc.code, message=exc.message, field=exc.field, details=exc.extra or None),
            status=exc.status_code,
        )
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            field, messages = next(iter(exc.message_dict.items()))
            first = exc.error_dict[field][0]
            return Response(
                error_body(code=first.code or "invalid", message=messages[0], field=field, details=exc.message_dict),
                status=status.HTTP_400_BAD_REQUEST,
            )
        first_error = exc.error_list[0]
        return Response(
            error_body(code=first_error.code or "invalid", message=exc.messages[0]), status=status.HTTP_400_BAD_REQUEST
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        error_field, message, code = _first_field_error(exc.detail)
        response.data = error_body(code=code, message=message, field=error_field, details=exc.detail)
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        response.data = error_body(code=codes if isinstance(codes, str) else "error", message=str(exc.detail))
    return response


class CreatedAtCursorPagination(CursorPagination):
    """Stable pagination for append-mostly lists (newest first)."""

    page_size = 50
    max_page_size = 500
    page_size_query_param = "page_size"
    ordering = "-created_at"


class AwareDateTimeField(serializers.DateTimeField):
    """ISO-8601 datetime that must carry an offset: a naive time is ambiguous across DST and is refused."""

    default_error_messages = {"naive": "Give the time with a UTC offset, e.g. 2026-11-26T17:00:00+01:00."}

    def to_internal_value(self, value: Any) -> Any:
        if isinstance(value, str) and value and not has_utc_offset(value):
            self.fail("naive")
        return super().to_internal_value(value)


def has_utc_offset(text: str) -> bool:
    tail = text.strip()[10:]  # after the date part
    return tail.endswith(("Z", "z")) or "+" in tail or "-" in tail


class _ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Machine-readable error code, e.g. isp_out_of_bounds.")
    message = serializers.CharField()
    field = serializers.CharField(allow_null=True, help_text="The input field at fault, if any (dotted path).")
    details = serializers.JSONField(required=False)


class ErrorSerializer(serializers.Serializer):
    error = _ErrorBodySerializer()


ERROR_RESPONSES = {400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer}


# Mixin for an input Serializer on a hot path: validate with the class's declared field objects, unbound and
# shared, instead of DRF's per-instance deep copy of every field (and of nested serializers' fields).
#
# For JSON input to serializers whose fields keep no per-request state and use no `source`, context or
# partial updates (plain scalar fields, nested serializers using this mixin). Results and the error structure are
# DRF's: the same `validate_<field>` hooks, `validate()`, and {field: [errors]}; a test compares both.
# (A comment, not a docstring: drf-spectacular would publish a docstring as the schema's description.)
class SharedFieldsInput:

    _shared_fields: ClassVar[tuple[tuple[str, serializers.Field], ...]]

    @classmethod
    def shared_fields(cls) -> tuple[tuple[str, serializers.Field], ...]:
        fields = cls.__dict__.get("_shared_fields")
        if fields is None:
            declared = cls._declared_fields  # type: ignore[attr-defined]
            fields = tuple((name, field) for name, field in declared.items() if not field.read_only)
            cls._shared_fields = fields
        return fields

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            message = serializers.Serializer.default_error_messages["invalid"].format(datatype=type(data).__name__)
            raise serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [message]}, code="invalid")
        validated: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        for name, field in self.shared_fields():
            hook = getattr(self, f"validate_{name}", None)
            try:
                value = field.run_validation(data.get(name, empty))
                if hook is not None:
                    value = hook(value)
            except serializers.ValidationError as exc:
                errors[name] = exc.detail
            except DjangoValidationError as exc:
                errors[name] = get_error_detail(exc)
            except SkipField:
                continue
            else:
                validated[name] = value
        if errors:
            raise serializers.ValidationError(errors)
        return validated

    def _read_only_defaults(self) -> dict[str, Any]:
        # DRF reads `self.fields` here (the per-instance deep copy the mixin avoids) to add read-only defaults for
        # validators; an input serializer without such fields has none to add.
        declared = self._declared_fields.values()  # type: ignore[attr-defined]
        if any(field.read_only and field.default is not empty for field in declared):
            return super()._read_only_defaults()  # type: ignore[misc]
        return {}
