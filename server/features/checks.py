"""Reads a feature file and checks every row before anything is written.

Each problem is reported with the file, the column and the rows (counted from 1, the first data
row; a CSV's line numbers are given too), and all of them at once, so one run says everything to
fix. Column types become feature dtypes (floats stay as wide as they are unless --dtype says
otherwise); list columns become vector features; groups gather scalar columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rankserve.ranker.entity_features import DTYPES, FeatureInfo

#: Rows listed in one message before "and N more".
SHOWN = 5


class InputProblems(ValueError):
    """The input cannot be imported as it is; ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass
class ImportOptions:
    entity: str
    input: Path
    key: str
    store: str
    version: str
    #: Columns (or group names) to import; None: every column except the key and grouped ones.
    features: list[str] | None = None
    #: NAME -> columns or PREFIX* patterns gathered into one vector feature.
    groups: dict[str, list[str]] = field(default_factory=dict)
    #: NAME -> default value as text.
    defaults: dict[str, str] = field(default_factory=dict)
    #: NAME -> feature dtype, converting the column.
    dtypes: dict[str, str] = field(default_factory=dict)
    keep_versions: int = 3
    allow_nan: bool = False
    prefix: str = "rankserve"


@dataclass
class Feature:
    info: FeatureInfo
    #: [rows, width]: numeric or bool values (anything where invalid), or objects for strings.
    values: np.ndarray
    #: [rows, width] bool, True where present; None when nothing is null.
    valid: np.ndarray | None


@dataclass
class Prepared:
    keys: list[str]
    features: list[Feature]

    @property
    def rows(self) -> int:
        return len(self.keys)

def read_input(path: Path) -> pa.Table:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix == ".csv":
            return pcsv.read_csv(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputProblems([f"{path}: cannot read: {exc}"]) from None
    raise InputProblems([f"{path}: give a .parquet or .csv file"])


class _Where:
    """Row numbers as a message shows them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.csv = path.suffix.lower() == ".csv"

    def rows(self, indices: Sequence[int] | np.ndarray) -> str:
        idx = [int(i) for i in indices]
        shown = ", ".join(str(i + 1) for i in idx[:SHOWN])
        more = f" and {len(idx) - SHOWN} more" if len(idx) > SHOWN else ""
        word = "row" if len(idx) == 1 else "rows"
        lines = ""
        if self.csv:
            lines = f" (CSV line{'s' if len(idx) > 1 else ''} "
            lines += ", ".join(str(i + 2) for i in idx[:SHOWN]) + ("..." if more else "") + ")"
        return f"{word} {shown}{more}{lines}"

    def column(self, name: str) -> str:
        return f"{self.path}: column '{name}'"


def _feature_dtype(t: pa.DataType) -> str | None:
    """The feature dtype holding an Arrow scalar type, None if none does."""
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_floating(t):
        return "float64" if pa.types.is_float64(t) else "float32"
    if pa.types.is_integer(t):
        small = t in (pa.int8(), pa.int16(), pa.int32(), pa.uint8(), pa.uint16())
        return "int32" if small else "int64"
    if (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t) or pa.types.is_string_view(t)):
        return "string"
    return None


def _as_number(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _numeric_text(arr: pa.Array, *, declared: bool,
                  ) -> tuple[np.ndarray, np.ndarray, list[int]] | None:
    """A text column read as numbers: values, presence (False where empty) and the rows whose
    text is no number. Unless ``declared`` numeric, None when the column looks like text (most
    of its first 1000 values are no numbers)."""
    values = arr.to_pylist()
    if not declared:
        sample = [v for v in values[:5000] if v not in (None, "")][:1000]
        if not sample or sum(_as_number(v) is not None for v in sample) * 2 < len(sample):
            return None
    numbers = np.zeros(len(values))
    present = np.ones(len(values), dtype=bool)
    bad = []
    for i, v in enumerate(values):
        if v is None or v == "":
            present[i] = False
            continue
        number = _as_number(v)
        if number is None:
            bad.append(i)
        else:
            numbers[i] = number
    return numbers, present, bad


_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


class _Checker:
    def __init__(self, options: ImportOptions, table: pa.Table) -> None:
        self.options = options
        self.table = table
        self.where = _Where(options.input)
        self.problems: list[str] = []

    def fail(self, message: str) -> None:
        self.problems.append(message)

    # one scalar column -> [rows] values, [rows] validity (None: all present), dtype
    def scalar(self, name: str, arr: pa.Array, dtype: str | None,
               ) -> tuple[np.ndarray, np.ndarray | None, str] | None:
        where = self.where.column(name)
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        source = _feature_dtype(arr.type)
        if pa.types.is_null(arr.type):
            if dtype is None:
                self.fail(f"{where}: every value is empty; give its type with"
                          f" --dtype {name}=TYPE or leave it out with --features")
                return None
            empty = (np.full(len(arr), "", dtype=object) if dtype == "string"
                     else np.zeros(len(arr), DTYPES[dtype]))
            return empty, np.zeros(len(arr), bool), dtype
        if source is None:
            self.fail(f"{where} is {arr.type}, which no feature type holds (numbers, bool, text"
                      " or lists of them); convert it, or leave it out with --features")
            return None
        valid = None if arr.null_count == 0 else np.asarray(
            arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        target = dtype or source
        if source == "string" and dtype == "bool":
            return self.bool_text(name, arr)
        if source == "string" and dtype != "string":
            parsed = _numeric_text(arr, declared=dtype is not None)
            if parsed is None:
                return np.asarray(arr.to_pylist(), dtype=object), valid, "string"
            numbers, present, bad = parsed
            if bad:
                shown = ", ".join(repr(arr[i].as_py()) for i in bad[:3])
                hint = ("" if dtype is not None else
                        f", or keep the column as text with --dtype {name}=string")
                self.fail(f"{where}: text in a numeric column at {self.where.rows(bad)}:"
                          f" {shown}; fix those values{hint}")
                return None
            return self.convert(name, numbers, None if present.all() else present,
                                dtype or "float64")
        if target == "string":
            texts = [None if v is None else str(v) for v in arr.to_pylist()]
            return np.asarray(texts, dtype=object), valid, "string"
        if source == "string":
            return np.asarray(arr.to_pylist(), dtype=object), valid, "string"
        if source == "bool" and target != "bool":
            self.fail(f"{where} is bool; it cannot become {target}")
            return None
        zero = pa.scalar(0 if source != "bool" else False, type=arr.type)
        values = pc.fill_null(arr, zero).to_numpy(zero_copy_only=False)
        return self.convert(name, values, valid, target)

    def bool_text(self, name: str, arr: pa.Array,
                  ) -> tuple[np.ndarray, np.ndarray | None, str] | None:
        texts = arr.to_pylist()
        values = np.zeros(len(texts), dtype=bool)
        present = np.ones(len(texts), dtype=bool)
        bad = []
        for i, text in enumerate(texts):
            lowered = "" if text is None else str(text).strip().lower()
            if lowered == "":
                present[i] = False
            elif lowered in _TRUE or lowered in _FALSE:
                values[i] = lowered in _TRUE
            else:
                bad.append(i)
        if bad:
            shown = ", ".join(repr(texts[i]) for i in bad[:3])
            self.fail(f"{self.where.column(name)}: not true/false at {self.where.rows(bad)}:"
                      f" {shown}")
            return None
        return values, None if present.all() else present, "bool"

    def convert(self, name: str, values: np.ndarray, valid: np.ndarray | None, target: str,
                ) -> tuple[np.ndarray, np.ndarray | None, str] | None:
        where = self.where.column(name)
        dtype = DTYPES[target]
        if target in ("int32", "int64"):
            ok = np.ones(len(values), bool) if valid is None else valid
            finite = np.where(ok, values, 0)
            if np.issubdtype(finite.dtype, np.floating) and not np.all(
                    finite == np.round(finite)):
                bad = np.flatnonzero(ok & (np.asarray(finite) != np.round(finite)))
                self.fail(f"{where}: fractions in an integer feature at {self.where.rows(bad)};"
                          f" use --dtype {name}=float32")
                return None
            info = np.iinfo(dtype)
            big = np.flatnonzero(ok & ((finite < info.min) | (finite > info.max)))
            if big.size:
                self.fail(f"{where}: values beyond {target} at {self.where.rows(big)}")
                return None
            return np.asarray(finite).astype(dtype), valid, target
        return np.asarray(values).astype(dtype), valid, target


def _match_group(spec: list[str], columns: Sequence[str]) -> list[str]:
    out: list[str] = []
    for part in spec:
        if part.endswith("*"):
            out.extend(c for c in columns if c.startswith(part[:-1]) and c not in out)
        elif part not in out:
            out.append(part)
    return out


def _promote(dtypes: Sequence[str]) -> str | None:
    kinds = set(dtypes)
    if kinds <= {"int32", "int64"}:
        return "int64" if "int64" in kinds else "int32"
    if kinds <= {"int32", "int64", "float32", "float64"}:
        return "float64" if "float64" in kinds else "float32"
    if kinds == {"bool"}:
        return "bool"
    if kinds == {"string"}:
        return "string"
    return None


def prepare(options: ImportOptions, table: pa.Table) -> Prepared:
    """Checks the table as the options say; InputProblems lists everything wrong."""
    check = _Checker(options, table)
    where = check.where
    names = list(table.column_names)
    if options.key not in names:
        raise InputProblems([f"{options.input}: no key column '{options.key}'; its columns:"
                             f" {', '.join(names)}"])
    # Which features, from which columns.
    grouped: dict[str, list[str]] = {}
    for gname, spec in options.groups.items():
        cols = _match_group(spec, names)
        unknown = [c for c in cols if c not in names]
        if unknown:
            check.fail(f"{options.input}: group '{gname}' names no column"
                       f" {', '.join(repr(c) for c in unknown)}")
        elif not cols:
            check.fail(f"{options.input}: group '{gname}' ({','.join(spec)}) matches no column")
        elif options.key in cols:
            check.fail(f"{options.input}: group '{gname}' takes the key column '{options.key}'")
        if gname in names and gname not in cols:
            check.fail(f"{options.input}: group '{gname}' has the name of a column; rename it")
        grouped[gname] = [c for c in cols if c in names]
    in_groups = {c for cols in grouped.values() for c in cols}
    if options.features is not None:
        wanted = list(options.features)
        for name in wanted:
            if name not in names and name not in grouped:
                check.fail(f"{options.input}: --features names '{name}', which is neither a"
                           f" column nor a --group; columns: {', '.join(names)}")
        if options.key in wanted:
            check.fail(f"{options.input}: the key column '{options.key}' cannot be a feature")
        wanted += [g for g in grouped if g not in wanted]
    else:
        wanted = [c for c in names if c != options.key and c not in in_groups] + list(grouped)
    if not wanted:
        check.fail(f"{options.input}: no feature to import besides the key '{options.key}'")
    for name in list(options.defaults) + list(options.dtypes):
        if name not in wanted:
            check.fail(f"{options.input}: --default/--dtype names '{name}', which is not"
                       f" imported; features: {', '.join(wanted)}")
    for name, dtype in options.dtypes.items():
        if dtype not in DTYPES:
            check.fail(f"--dtype {name}={dtype}: give one of {', '.join(DTYPES)}")
    if check.problems:
        raise InputProblems(check.problems)

    keys = _keys(check, table.column(options.key).combine_chunks())
    features: list[Feature] = []
    for name in wanted:
        dtype = options.dtypes.get(name)
        if name in grouped:
            feature = _group(check, name, grouped[name], dtype)
        else:
            feature = _column(check, name, table.column(name).combine_chunks(), dtype)
        if feature is None:
            continue
        default = options.defaults.get(name)
        if default is not None:
            parsed = _parse_default(check, name, feature.info.dtype, default)
            feature.info = FeatureInfo(name, feature.info.dtype, feature.info.width, parsed)
        if feature.info.dtype in ("float32", "float64") and not options.allow_nan:
            ok = np.isfinite(feature.values)
            if feature.valid is not None:
                ok |= ~feature.valid
            bad = np.flatnonzero(~ok.all(axis=1))
            if bad.size:
                check.fail(f"{where.column(name)}: NaN or inf at {where.rows(bad)}; fix them,"
                           " leave them empty (the default is used), or store them with"
                           " --allow-nan")
        features.append(feature)
    if check.problems:
        raise InputProblems(check.problems)
    return Prepared(keys, features)


def _keys(check: _Checker, arr: pa.Array) -> list[str]:
    where = check.where
    name = check.options.key
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    kind = _feature_dtype(arr.type)
    if kind is None or kind in ("bool",) or pa.types.is_floating(arr.type):
        check.fail(f"{where.column(name)} is {arr.type}; a key column holds text or integers")
        return []
    raw = arr.to_pylist()
    keys = ["" if k is None else (k.decode() if isinstance(k, bytes) else str(k)) for k in raw]
    empty = [i for i, k in enumerate(keys) if k == ""]
    if empty:
        check.fail(f"{where.column(name)}: empty key at {where.rows(empty)}")
    first: dict[str, int] = {}
    repeated: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        if k == "":
            continue
        seen = first.setdefault(k, i)
        if seen != i:
            repeated.setdefault(k, [seen]).append(i)
    if repeated:
        shown = "; ".join(f"{k!r} at {where.rows(rows)}"
                          for k, rows in list(repeated.items())[:SHOWN])
        more = f" (and {len(repeated) - SHOWN} more keys)" if len(repeated) > SHOWN else ""
        check.fail(f"{where.column(name)}: duplicate keys: {shown}{more}")
    return keys


def _column(check: _Checker, name: str, arr: pa.Array, dtype: str | None) -> Feature | None:
    t = arr.type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _list_column(check, name, arr, dtype)
    converted = check.scalar(name, arr, dtype)
    if converted is None:
        return None
    values, valid, kind = converted
    return Feature(FeatureInfo(name, kind, 1), values.reshape(-1, 1),
                   None if valid is None else valid.reshape(-1, 1))


def _list_column(check: _Checker, name: str, arr: pa.Array, dtype: str | None,
                 ) -> Feature | None:
    where = check.where
    rows = len(arr)
    lengths_arr = pc.list_value_length(arr)
    row_valid = np.asarray(lengths_arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    lengths = pc.fill_null(lengths_arr, -1).to_numpy(zero_copy_only=False)
    present = np.flatnonzero(row_valid)
    if present.size == 0:
        check.fail(f"{where.column(name)}: every list is empty (null); leave it out with"
                   " --features")
        return None
    width = int(lengths[present[0]])
    differ = present[lengths[present] != width]
    if differ.size:
        first = int(differ[0])
        check.fail(f"{where.column(name)}: row {first + 1} has {int(lengths[first])} values,"
                   f" row {int(present[0]) + 1} has {width}; every row of a vector feature has"
                   f" the same length (differing: {where.rows(differ)})")
        return None
    if width == 0:
        check.fail(f"{where.column(name)}: the lists are empty")
        return None
    if pa.types.is_fixed_size_list(arr.type):
        flat = arr.values.slice(arr.offset * width, rows * width)
        converted = check.scalar(name, flat, dtype)
        if converted is None:
            return None
        values, valid, kind = converted
        values = values.reshape(rows, width)
        valid = None if valid is None else valid.reshape(rows, width)
    else:
        flat = arr.flatten()  # the values of present lists only
        converted = check.scalar(name, flat, dtype)
        if converted is None:
            return None
        inner, inner_valid, kind = converted
        values = np.zeros((rows, width), dtype=inner.dtype) if kind != "string" else \
            np.full((rows, width), "", dtype=object)
        values[present] = inner.reshape(-1, width)
        valid = None
        if inner_valid is not None:
            valid = np.zeros((rows, width), bool)
            valid[present] = inner_valid.reshape(-1, width)
    if not row_valid.all():
        valid = np.ones((rows, width), bool) if valid is None else valid
        valid &= row_valid[:, None]
    return Feature(FeatureInfo(name, kind, width), values, valid)


def _group(check: _Checker, name: str, cols: list[str], dtype: str | None) -> Feature | None:
    parts = []
    for col in cols:
        arr = check.table.column(col).combine_chunks()
        t = arr.type
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            check.fail(f"{check.where.column(col)} is a list; a --group gathers scalar columns"
                       f" (group '{name}')")
            return None
        converted = check.scalar(col, arr, dtype)
        if converted is None:
            return None
        parts.append(converted)
    kinds = [p[2] for p in parts]
    target = dtype or _promote(kinds)
    if target is None:
        listed = ", ".join(f"{c} ({k})" for c, k in zip(cols, kinds, strict=True))
        check.fail(f"{check.where.path}: group '{name}' mixes types: {listed}; give"
                   f" --dtype {name}=TYPE")
        return None
    values = np.stack([p[0].astype(DTYPES[target]) for p in parts], axis=1)
    valid = None
    if any(p[1] is not None for p in parts):
        valid = np.stack([np.ones(len(p[0]), bool) if p[1] is None else p[1] for p in parts],
                         axis=1)
    return Feature(FeatureInfo(name, target, len(cols)), values, valid)


def _parse_default(check: _Checker, name: str, dtype: str, text: str) -> Any:
    try:
        if dtype == "string":
            return text
        if dtype == "bool":
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return lowered in ("true", "1")
        if dtype in ("int32", "int64"):
            return int(text)
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(text)
        return value
    except ValueError:
        check.fail(f"--default {name}={text}: not a {dtype} value (the feature is {dtype})")
        return None
