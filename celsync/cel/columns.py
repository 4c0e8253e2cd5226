"""Which real column holds each canonical CEL column (SPEC §3 "Column aliases").

Pure: it works on the table's column names and type kinds (gathered by the source with
SQLAlchemy's inspector) and the configured aliases, so every schema variant seen in the
wild can be tested without a database. Aliases are identifiers, never SQL: config
validation already restricts them and the source only ever uses them as quoted names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import types as sqltypes

from celsync.cel.parse import as_text, parse_eventtype, parse_extra
from celsync.model import CEL_COLUMNS

#: Names other schemas use for a canonical column (cel_sqlite3_custom, MSSQL/TDS examples,
#: old FreePBX, cel_custom), tried in order, case-insensitively, when no alias is configured.
VARIANTS: dict[str, tuple[str, ...]] = {
    "id": ("id", "acctid"),
    "channame": ("channame", "channel"),
    "cid_name": ("cid_name", "cidname"),
    "cid_num": ("cid_num", "cidnum"),
    "cid_ani": ("cid_ani", "cidani"),
    "cid_rdnis": ("cid_rdnis", "cidrdnis"),
    "cid_dnid": ("cid_dnid", "ciddnid"),
    "extra": ("extra", "eventextra"),
    "peer": ("peer", "bridgepeer"),
    "appname": ("appname", "app"),
}
#: Without these a row cannot be read in order, timed or placed in a call.
REQUIRED: tuple[str, ...] = ("id", "eventtype", "eventtime", "uniqueid", "linkedid", "channame")
#: How many of the newest rows are looked at to decide whether ``extra`` holds JSON.
EXTRA_SAMPLE = 1000


class SourceError(Exception):
    """The CEL source cannot be used as configured; the message names the key and the fix."""


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """A real column: its name and the kind of values it holds.

    ``kind`` is one of ``text``, ``integer``, ``number``, ``datetime`` (naive),
    ``datetime_tz`` or ``other``.
    """

    name: str
    kind: str


@dataclass(frozen=True, slots=True)
class ColumnMap:
    """The outcome of column resolution.

    ``actual`` maps every canonical column that is read to its real column (``linkedid``
    may map to the ``uniqueid`` column, see ``warnings``); canonical columns in
    ``missing`` read as ``""``. ``configured`` are the aliases from ``source.columns``,
    ``detected`` the variant names found automatically.
    """

    actual: Mapping[str, str]
    kinds: Mapping[str, str]
    configured: Mapping[str, str] = field(default_factory=dict)
    detected: Mapping[str, str] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line for start-up logs and ``doctor``: the aliases in use and what is absent."""
        parts = []
        if self.configured:
            parts.append("aliases " + ", ".join(f"{k}={v}" for k, v in self.configured.items()))
        if self.detected:
            parts.append("detected " + ", ".join(f"{k}={v}" for k, v in self.detected.items()))
        if self.missing:
            parts.append("absent (read as empty): " + ", ".join(self.missing))
        return "; ".join(parts) or "all canonical columns present"


def kind_of(sqltype: Any) -> str:
    """The value kind of a reflected SQLAlchemy type (untyped SQLite columns are text)."""
    if isinstance(sqltype, sqltypes.Integer):
        return "integer"
    if isinstance(sqltype, (sqltypes.Numeric, sqltypes.Float)):
        return "number"
    if isinstance(sqltype, sqltypes.DateTime):
        return "datetime_tz" if sqltype.timezone else "datetime"
    if isinstance(sqltype, (sqltypes.String, sqltypes.NullType, sqltypes.LargeBinary)):
        return "text"
    return "other"


def resolve(table: str, columns: Sequence[ColumnInfo], aliases: Mapping[str, str]) -> ColumnMap:
    """Map canonical columns to ``columns`` of ``table``; raise :class:`SourceError` if impossible."""
    by_name = {c.name: c for c in columns}
    by_lower: dict[str, ColumnInfo] = {}
    for c in columns:
        by_lower.setdefault(c.name.lower(), c)
    existing = ", ".join(c.name for c in columns)

    actual: dict[str, str] = {}
    kinds: dict[str, str] = {}
    detected: dict[str, str] = {}
    missing: list[str] = []
    for canonical in CEL_COLUMNS:
        if canonical in aliases:
            alias = aliases[canonical]
            found = by_name.get(alias) or by_lower.get(alias.lower())
            if found is None:
                raise SourceError(
                    f"source.columns.{canonical}: column {alias!r} does not exist in table "
                    f"{table!r}; its columns are: {existing}"
                )
        else:
            found = next(
                (by_lower[n] for n in VARIANTS.get(canonical, (canonical,)) if n in by_lower), None
            )
            if found is not None and found.name != canonical:
                detected[canonical] = found.name
        if found is None:
            missing.append(canonical)
            continue
        actual[canonical] = found.name
        kinds[canonical] = found.kind

    warnings: list[str] = []
    if "linkedid" in missing and "uniqueid" in actual:
        # cel_sqlite3_custom's default table has no linkedid: every channel is its own call.
        missing.remove("linkedid")
        actual["linkedid"] = actual["uniqueid"]
        kinds["linkedid"] = kinds["uniqueid"]
        warnings.append(
            f"table {table!r} has no linkedid column: each channel is treated as its own call, "
            "so legs of one call are joined only through shared uniqueids (add linkedid to the "
            "CEL table, or map it with source.columns.linkedid)"
        )
    absent = [c for c in REQUIRED if c in missing]
    if absent:
        looked = "; ".join(f"{c}: {', '.join(VARIANTS.get(c, (c,)))}" for c in absent)
        raise SourceError(
            f"table {table!r} lacks required column(s) {', '.join(absent)} (looked for {looked}); "
            f"its columns are: {existing}. Map each with source.columns.<name>: <column>"
        )
    return ColumnMap(
        actual=actual, kinds=kinds, configured=dict(aliases), detected=detected,
        missing=tuple(missing), warnings=tuple(warnings),
    )


def extra_problem(columns: ColumnMap, samples: Iterable[tuple[Any, Any]]) -> str | None:
    """Why ``extra`` gives no data (degraded status mode, SPEC §5.3), or None if it does.

    ``samples`` are ``(eventtype, extra)`` values of the newest rows. The column is judged
    useless when it is absent, of a type that cannot hold JSON, or when none of its
    non-empty values is a JSON object (or a pre-12 HANGUP text) — or all are empty although
    HANGUP rows, which always carry one, are there.
    """
    if "extra" not in columns.actual:
        return (
            "degraded status mode: the table has no extra column, so hangup causes and dial "
            "statuses are unknown and calls are only answered or missed (SPEC 5.3); add "
            "'extra' to the CEL table or map it with source.columns.extra"
        )
    name, kind = columns.actual["extra"], columns.kinds["extra"]
    if kind != "text":
        return (
            f"degraded status mode: extra is read from column {name!r} of {kind} type, which "
            "cannot hold Asterisk's JSON; calls are only answered or missed (SPEC 5.3). "
            "Point source.columns.extra at the text column holding the JSON"
        )
    rows = nonempty = hangups = 0
    for eventtype, value in samples:
        rows += 1
        etype = parse_eventtype(eventtype)
        hangups += etype == "HANGUP"
        text = as_text(value)
        if text:
            nonempty += 1
            fields, _ = parse_extra(text, etype)
            if fields:
                return None
    if nonempty:
        why = f"none of its {nonempty} non-empty values in the newest {rows} rows is a JSON object"
    elif hangups:
        why = f"it is empty on all {hangups} HANGUP rows among the newest {rows}"
    else:
        return None
    return (
        f"degraded status mode: column {name!r} (extra) holds no Asterisk JSON: {why}; calls "
        "are only answered or missed (SPEC 5.3). Check source.columns.extra"
    )
