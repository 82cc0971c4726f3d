"""Hand-written SELECTs for hot paths, turned back into model instances the way the ORM would.

The ORM spends several times longer compiling a query with correlated sub-selects than the database spends
running it. A hot path may keep such a query as SQL text built once from the models' metadata (so it follows
schema changes) and rebuild instances here, with the same value converters the ORM applies (SQLite returns
UUIDs as hex text, decimals and datetimes as strings, booleans as integers).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

from django.db import connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import signals
from django.db.models.base import ModelState
from django.utils.connection import ConnectionProxy

M = TypeVar("M", bound=models.Model)

Converter = Callable[[Any, Any, BaseDatabaseWrapper], Any]


def wrapper(connection: BaseDatabaseWrapper) -> BaseDatabaseWrapper:
    """The connection itself for `django.db.connection`, a proxy that looks the connection up (in a thread-local)
    on every attribute read: the functions here read a dozen attributes per row, which cost a tenth of an offer
    submission before they resolved the proxy once."""
    if isinstance(connection, ConnectionProxy):
        return connections[connection._alias]  # type: ignore[attr-defined, no-any-return]
    return connection


def select_columns(model: type[models.Model], alias: str) -> str:
    """`alias."col1", alias."col2", ...` for every concrete field, in _meta order (matches `instance_from_row`)."""
    return ", ".join(f'{alias}."{field.column}"' for field in model._meta.concrete_fields)


def db_value(model: type[models.Model], field_name: str, value: Any, connection: BaseDatabaseWrapper) -> Any:
    """A Python value as the database stores it in `field_name` (e.g. a UUID as hex text on SQLite)."""
    return model._meta.get_field(field_name).get_db_prep_value(value, wrapper(connection))  # type: ignore[union-attr]


def _column_plan(
    model: type[models.Model], alias: str, connection: BaseDatabaseWrapper
) -> tuple[list[str], list[tuple[Any, list[Converter]]]]:
    """Attribute names and (column expression, converters) per concrete field, worked out once per connection:
    the converters are the connection's own (bound) methods, and computing them per row cost more than the query."""
    plans: dict[tuple[type[models.Model], str], Any] = connection.__dict__.setdefault("_common_sql_plans", {})
    plan = plans.get((model, alias))
    if plan is None:
        fields = model._meta.concrete_fields
        columns = []
        for field in fields:
            expression = field.get_col(alias)
            columns.append((expression, [*connection.ops.get_db_converters(expression),
                                         *field.get_db_converters(connection)]))
        plan = plans[(model, alias)] = ([field.attname for field in fields], columns)
    return plan


def instance_from_row(
    model: type[M], row: Sequence[Any], *, offset: int, alias: str, connection: BaseDatabaseWrapper
) -> tuple[M, int]:
    """Build one `model` instance from row[offset:] (columns as `select_columns` lists them); return it and the
    offset of the next column."""
    connection = wrapper(connection)
    attnames, columns = _column_plan(model, alias, connection)
    values = []
    for position, (expression, converters) in enumerate(columns):
        value = row[offset + position]
        for convert in converters:
            value = convert(value, expression, connection)
        values.append(value)
    return saved_instance(model, attnames, values, alias=connection.alias), offset + len(columns)


def saved_instance(model: type[M], attnames: Sequence[str], values: Sequence[Any], *, alias: str) -> M:
    """A fetched row as an instance (values for every concrete field, in _meta order), as Model.from_db builds it.

    Without pre_init/post_init receivers for the model (none of ours has any) the attributes go straight into the
    instance's __dict__: Model.__init__ sends both signals and sets each field through its descriptor, which cost
    about a tenth of an offer submission for the ~40 instances it reads and writes."""
    if _init_receivers(model):
        return model.from_db(alias, list(attnames), list(values))
    instance = model.__new__(model)
    instance.__dict__.update(zip(attnames, values, strict=True))
    state = instance._state = ModelState()
    state.adding = False
    state.db = alias
    return instance


def _init_receivers(model: type[models.Model]) -> bool:
    # The receiver lists first: both are empty in this project, and has_listeners walks the signal's cache.
    return bool((signals.pre_init.receivers and signals.pre_init.has_listeners(model))
                or (signals.post_init.receivers and signals.post_init.has_listeners(model)))


def seed_prefetch_cache(instance: models.Model, name: str, objects: list[Any]) -> None:
    """Seed the prefetch cache of `instance.<name>.all()` with rows already in hand (just written, or read by
    hand), so reading the relation costs no query (Django reads reverse relations from
    `_prefetched_objects_cache`)."""
    queryset = getattr(instance, name).all()
    queryset._result_cache = objects
    queryset._prefetch_done = True
    cache = {**getattr(instance, "_prefetched_objects_cache", {}), name: queryset}
    instance._prefetched_objects_cache = cache  # type: ignore[attr-defined]


def instances_from_rows(
    model: type[M], rows: Sequence[Sequence[Any]], *, alias: str, connection: BaseDatabaseWrapper
) -> list[M]:
    connection = wrapper(connection)
    return [instance_from_row(model, row, offset=0, alias=alias, connection=connection)[0] for row in rows]


def insert_instances(model: type[M], objs: Sequence[M], *, connection: BaseDatabaseWrapper) -> list[M]:
    """INSERT new instances in one statement, as bulk_create would (auto_now values, prepared values, database ids
    read back with RETURNING), without compiling a query: for inserts on a hot path. No signals are sent
    (bulk_create sends none either); callers validate before, as they would for bulk_create."""
    if not objs:
        return []
    connection = wrapper(connection)
    auto_pk = _auto_pk(model)
    if auto_pk is not None and not connection.features.can_return_rows_from_bulk_insert:
        return model._default_manager.using(connection.alias).bulk_create(objs)  # an old SQLite: let the ORM do it
    sql, params = insert_statement(model, objs, connection=connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        ids = [row[0] for row in cursor.fetchall()] if auto_pk is not None else []
    mark_inserted(objs, ids, connection=connection)
    return list(objs)


def insert_statement(
    model: type[models.Model],
    objs: Sequence[models.Model],
    *,
    connection: BaseDatabaseWrapper,
    returning: Sequence[str] = (),
) -> tuple[str, list[Any]]:
    """The INSERT ... VALUES statement of insert_instances (RETURNING the auto primary key, if any, then the
    `returning` columns), to run alone or as one part of a larger statement (a data-modifying CTE)."""
    connection = wrapper(connection)
    return (insert_sql(model, len(objs), connection=connection, returning=returning),
            insert_params(model, objs, connection=connection))


def insert_sql(model: type[models.Model], rows: int, *, connection: BaseDatabaseWrapper,
               returning: Sequence[str] = ()) -> str:
    """The text of insert_statement for `rows` rows (the same for any values: a hot path may build it once)."""
    fields = insert_fields(model)
    quote = connection.ops.quote_name
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} "  # noqa: S608 - names from model metadata
        f"({', '.join(quote(str(field.column)) for field in fields)}) VALUES {', '.join([row_sql] * rows)}"
    )
    auto_pk = _auto_pk(model)
    returned = ([str(auto_pk.column)] if auto_pk is not None else []) + list(returning)
    if returned:
        sql += " RETURNING " + ", ".join(quote(column) for column in returned)
    return sql


def insert_params(model: type[models.Model], objs: Sequence[models.Model], *,
                  connection: BaseDatabaseWrapper) -> list[Any]:
    """The parameters of insert_statement: every insert field of every object, prepared as the ORM saves it."""
    fields = insert_fields(model)
    return [field.get_db_prep_save(field.pre_save(obj, add=True), connection) for obj in objs for field in fields]


def insert_fields(model: type[models.Model]) -> list[models.Field]:
    """The columns an INSERT of new instances writes: every concrete field but an automatic primary key."""
    auto_pk = _auto_pk(model)
    return [field for field in model._meta.concrete_fields if field is not auto_pk]


def unnest_sql(fields: Sequence[models.Field], *, connection: BaseDatabaseWrapper, alias: str = "rows") -> str:
    """`unnest(...) AS alias(...)` over `fields` (unnest_columns); the text is the same for any number of rows."""
    quote = connection.ops.quote_name
    return unnest_columns([(quote(str(field.column)), str(field.db_type(connection)), []) for field in fields],
                          alias=alias)[0]


def unnest_params(objs: Sequence[models.Model], fields: Sequence[models.Field], *,
                  connection: BaseDatabaseWrapper) -> list[Any]:
    """The parameters of unnest_sql: one array per field, values prepared as for an INSERT (array_param)."""
    return [array_param([field.get_db_prep_save(field.pre_save(obj, add=True), connection) for obj in objs])
            for field in fields]


def array_param(values: list[Any]) -> Any:
    """A list for a `%s::type[]` parameter: as PostgreSQL's array text (`{1,"a b",NULL}`, a str psycopg sends
    untyped, so the cast types it) when every element is None or of exactly the type bool, int, Decimal, UUID,
    date or datetime, or any str; else the list itself. psycopg's own list adaptation inspects and dumps each
    element in Python and cost a tenth of an offer submission for its nine arrays."""
    parts = []
    for value in values:
        kind = type(value)
        if value is None:
            parts.append("NULL")
        elif kind is int or kind is Decimal or kind is uuid.UUID:
            parts.append(str(value))
        elif kind is bool:
            parts.append("t" if value else "f")
        elif isinstance(value, str):  # str.__str__: the text itself, also of a TextChoices member
            parts.append('"' + str.__str__(value).replace("\\", "\\\\").replace('"', '\\"') + '"')
        elif kind is datetime or kind is date:
            parts.append('"' + value.isoformat() + '"')
        else:
            return values
    return "{" + ",".join(parts) + "}"


def unnest_columns(columns: Sequence[tuple[str, str, list[Any]]], *, alias: str) -> tuple[str, list[list[Any]]]:
    """PostgreSQL: `unnest(%s::type[], ...) AS alias(column, ...)` and its parameters, one array per
    (quoted column name, SQL type, values).

    Rows as arrays keep the statement text and its parameter count the same however many rows there are: psycopg
    caches a statement's conversion, and prepares it, only for texts of at most 4 KiB with at most 50 parameters."""
    casts = ", ".join(f"%s::{sql_type}[]" for _, sql_type, _ in columns)
    names = ", ".join(name for name, _, _ in columns)
    return f"unnest({casts}) AS {alias}({names})", [values for _, _, values in columns]


def instance_from_values(model: type[M], values: dict[str, Any], *, connection: BaseDatabaseWrapper) -> M:
    """A saved instance from database values by attname (every concrete field), built as saved_instance builds a
    fetched row (cheaper than keyword arguments to the model)."""
    attnames = [field.attname for field in model._meta.concrete_fields]
    return saved_instance(model, attnames, [values[name] for name in attnames], alias=wrapper(connection).alias)


def mark_inserted(objs: Sequence[models.Model], ids: Sequence[Any], *, connection: BaseDatabaseWrapper) -> None:
    """Set what an INSERT gave the instances (database ids, if the pk is automatic) and mark them saved."""
    alias = wrapper(connection).alias
    auto_pk = _auto_pk(type(objs[0])) if objs else None
    for position, obj in enumerate(objs):
        if auto_pk is not None:
            setattr(obj, auto_pk.attname, ids[position])
        obj._state.adding = False
        obj._state.db = alias


def _auto_pk(model: type[models.Model]) -> models.Field | None:
    pk = model._meta.pk
    return pk if pk is not None and pk.get_internal_type() in _AUTO_FIELDS else None


_AUTO_FIELDS = frozenset({"AutoField", "BigAutoField", "SmallAutoField"})
