"""Hand-written SELECTs for hot paths, turned back into model instances the way the ORM would.

The ORM spends several times longer compiling a query with correlated sub-selects than the database spends
running it. A hot path may keep such a query as SQL text built once from the models' metadata (so it follows
schema changes) and rebuild instances here, with the same value converters the ORM applies (SQLite returns
UUIDs as hex text, decimals and datetimes as strings, booleans as integers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

M = TypeVar("M", bound=models.Model)

Converter = Callable[[Any, Any, BaseDatabaseWrapper], Any]


def select_columns(model: type[models.Model], alias: str) -> str:
    """`alias."col1", alias."col2", ...` for every concrete field, in _meta order (matches `instance_from_row`)."""
    return ", ".join(f'{alias}."{field.column}"' for field in model._meta.concrete_fields)


def db_value(model: type[models.Model], field_name: str, value: Any, connection: BaseDatabaseWrapper) -> Any:
    """A Python value as the database stores it in `field_name` (e.g. a UUID as hex text on SQLite)."""
    return model._meta.get_field(field_name).get_db_prep_value(value, connection)  # type: ignore[union-attr]


def _converters(field: models.Field[Any, Any], alias: str, connection: BaseDatabaseWrapper) -> list[Converter]:
    expression = field.get_col(alias)
    return [*connection.ops.get_db_converters(expression), *field.get_db_converters(connection)]


def instance_from_row(
    model: type[M], row: Sequence[Any], *, offset: int, alias: str, connection: BaseDatabaseWrapper
) -> tuple[M, int]:
    """Build one `model` instance from row[offset:] (columns as `select_columns` lists them); return it and the
    offset of the next column."""
    fields = model._meta.concrete_fields
    values = []
    for position, field in enumerate(fields):
        value = row[offset + position]
        expression = field.get_col(alias)
        for convert in _converters(field, alias, connection):
            value = convert(value, expression, connection)
        values.append(value)
    return model.from_db(connection.alias, [field.attname for field in fields], values), offset + len(fields)
