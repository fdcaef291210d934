"""Hot reads compiled once per dialect, for running on the driver's own connection.

SQLAlchemy's execution of a Core statement (cache key, execution context, result
metadata, Row objects) and, on PostgreSQL, a pool checkout and check-in around it cost
several times the indexed read itself: about 60 us of CPU a GetGeneration on SQLite
and 200 us on PostgreSQL, where the read takes 13 and 30 us. A PreparedRead keeps
what SQLAlchemy works out for a statement (its SQL for the dialect, the order of its
parameters, the type conversions of its columns) so that ``Database.fetch_prepared``
can hand the SQL straight to the driver and convert the rows with the same processors.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Dialect, Select
from sqlalchemy.types import TypeEngine

Processor = Callable[[Any], Any]


@dataclass(slots=True)
class CompiledRead:
    """One statement for one dialect: its SQL, its parameters in order, its row shape,
    and (once ``learn_types`` has seen what the driver returns) its conversions."""

    sql: str
    parameters: tuple[str, ...]
    row_type: Callable[..., Any]
    types: tuple[TypeEngine[Any], ...]
    dialect: Dialect
    processors: tuple[Processor | None, ...] | None = None
    _converting: tuple[tuple[int, Processor], ...] | None = None

    def learn_types(self, type_codes: Sequence[Any] | None) -> None:
        """Make the column conversions, given the driver's type code of each column (None
        where it has none: SQLite). As SQLAlchemy does, from the cursor's description:
        some conversions depend on it (a PostgreSQL float needs none, a numeric one)."""
        codes = list(type_codes) if type_codes is not None else [None] * len(self.types)
        self._converting = None
        self.processors = tuple(
            _processor(column_type, self.dialect, code)
            for column_type, code in zip(self.types, codes, strict=True)
        )

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        """The statement's parameters (strings and numbers, passed as they are), in order."""
        return [params[name] for name in self.parameters]

    def rows(self, records: Iterable[Sequence[Any]]) -> list[Any]:
        """Rows with named columns (and ``_mapping``), values converted as SQLAlchemy would."""
        converting = self._converting
        if converting is None:
            assert self.processors is not None, "learn_types first"
            # Only the columns that have a conversion are visited per row (a third of a
            # generation's, on SQLite).
            converting = self._converting = tuple(
                (index, convert)
                for index, convert in enumerate(self.processors)
                if convert is not None
            )
        make = self.row_type
        rows = []
        for record in records:
            values = list(record)
            for index, convert in converting:
                value = values[index]
                if value is not None:
                    values[index] = convert(value)
            rows.append(make(*values))
        return rows


def _processor(column_type: TypeEngine[Any], dialect: Dialect, code: Any) -> Processor | None:
    # JSON decodes with the engine's json_deserializer (server/store/db.py loads_json).
    return column_type.dialect_impl(dialect).result_processor(dialect, code)


class PreparedRead:
    """A Core select whose compiled form is made once per dialect (at first use)."""

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._compiled: dict[str, CompiledRead] = {}

    def bind(self, dialect: Dialect) -> CompiledRead:
        """The statement compiled for ``dialect``."""
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = self._compiled[dialect.name] = self._compile(dialect)
        return compiled

    def _compile(self, dialect: Dialect) -> CompiledRead:
        compiled = self.statement.compile(dialect=dialect)
        return CompiledRead(
            sql=compiled.string,
            parameters=tuple(compiled.positiontup or ()),
            row_type=_row_type(list(self.statement.selected_columns.keys())),
            # Each column converts as SQLAlchemy's Row would convert it (SQLite's text
            # timestamps and JSON, its 0/1 booleans; UTCDateTime's zone).
            types=tuple(column.type for column in self.statement.selected_columns),
            dialect=dialect,
        )


def _row_type(keys: list[str]) -> Callable[..., Any]:
    """A tuple type with the columns as attributes and ``_mapping``, like a Core Row."""
    base = namedtuple("PreparedRow", keys)  # type: ignore[misc]

    class PreparedRow(base):
        __slots__ = ()

        @property
        def _mapping(self) -> dict[str, Any]:
            return dict(zip(self._fields, self, strict=True))

    return PreparedRow
