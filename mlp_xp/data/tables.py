"""Tables as people have them: a streaming CSV reader, and the preprocessing that turns a table's
columns into features (what ``mlp-xp train`` does, saved with the model for ``predict``).

Reading (:func:`read_csv`): the file is read in chunks of lines. A chunk of numbers only goes
through numpy's C parser (``np.loadtxt``); a chunk with text, quotes, missing values or blank
lines through Python's ``csv`` module. Each column is kept as float64 (NaN where a value is
missing) or, once a value is not a number, as text. The peak memory is about twice the float
array of the result; numeric tables read at tens of MB/s (``benchmarks/csv_read.py``).

A value is missing when its cell is empty or one of :data:`MISSING` ("NA", "N/A", "nan", "null",
"None", "?"; any case), as pandas and R write missing values. A file that is not UTF-8 is read as
Latin-1 (every byte a character), as older spreadsheets and R on Windows write text.

Preprocessing (:class:`TablePlan`), fitted on the training rows and saved with a model:

- a column of numbers is a feature as it is; a missing value is filled with the training rows'
  mean or median (``missing="mean"`` / ``"median"``);
- a column of ``True``/``False`` (any case) is a feature of 1.0 / 0.0;
- a column of text is one-hot encoded over the categories of the training rows, one feature
  per category (``"column=category"``); a category not seen in training gives all zeros (and
  ``predict`` says how many rows had one); a missing value is the most frequent category under
  ``"mean"`` / ``"median"``. A text column with more than :data:`MAX_CATEGORIES` categories is
  refused (names, free text): drop it.

Example:
    >>> import os, tempfile
    >>> from mlp_xp.data.tables import read_csv, TablePlan
    >>> path = os.path.join(tempfile.mkdtemp(), "pets.csv")
    >>> _ = open(path, "w").write("weight,kind,indoor\\n4.1,cat,True\\n30.5,dog,False\\nNA,cat,true\\n")
    >>> table = read_csv(path)
    >>> table.columns["weight"].tolist(), table.columns["kind"].tolist()
    ([4.1, 30.5, nan], ['cat', 'dog', 'cat'])
    >>> plan = TablePlan.fit(table, ["weight", "kind", "indoor"], missing="mean")
    >>> plan.feature_names
    ('weight', 'kind=cat', 'kind=dog', 'indoor')
    >>> plan.transform(table)[0].tolist()
    [[4.1, 1.0, 0.0, 1.0], [30.5, 0.0, 1.0, 0.0], [17.3, 1.0, 0.0, 1.0]]
"""

from __future__ import annotations

import csv
import itertools
import math
import re
from typing import Any, NamedTuple

import numpy as np

__all__ = ["MISSING", "MAX_CATEGORIES", "RawTable", "read_csv", "csv_header", "ColumnPlan", "TablePlan", "TableInfo",
           "missing_counts", "missing_rows", "index_columns"]

#: the cell texts read as a missing value (compared case-insensitively, after stripping spaces)
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?", "#n/a"})
#: a text feature column with more categories than this is refused (names, ids, free text)
MAX_CATEGORIES = 100
_TRUE, _FALSE = "true", "false"
#: lines per chunk read at once
CHUNK_LINES = 1 << 15
#: names of columns taken for row indices or ids (compared case-insensitively)
INDEX_NAMES = frozenset({"", "unnamed: 0", "id", "index", "idx", "row", "rowid", "row_id", "row.names"})


class RawTable(NamedTuple):
    """The columns of a CSV file as read.

    Attributes:
        header: the column names, in the file's order.
        columns: {name: array}: float64 (NaN where missing) for columns of numbers, an object
            array of str (None where missing) for the others; only the columns asked for.
        lines: each row's line number in the file (for messages), int64.
    """

    header: tuple
    columns: dict
    lines: Any

    @property
    def rows(self) -> int:
        return len(self.lines)

    def take(self, rows) -> "RawTable":
        """The table of ``rows`` (indices or a boolean mask)."""
        return RawTable(self.header, {name: values[rows] for name, values in self.columns.items()}, self.lines[rows])


def _is_missing(text):
    return text.strip().lower() in MISSING


class _NotNumbers(Exception):
    """A column read as numbers holds text: read again with it as text."""

    def __init__(self, column):
        self.column = column


def read_csv(path, columns=None, text_columns=()) -> RawTable:
    """Read a CSV file with a header row (the delimiter, comma, semicolon or tab, is detected).

    Args:
        path: the file.
        columns: the names of the columns to read (None: all), in any order.
        text_columns: columns to keep as text even where every value is a number.

    Raises:
        ValueError: no header or no data row, duplicate or unknown column names, a row with
            another number of fields than the header (named by its line).
    """
    text = set(text_columns)
    encoding = "utf-8-sig"
    for _ in range(1000):
        try:
            return _read(path, columns, text, encoding)
        except _NotNumbers as found:
            text.add(found.column)
        except UnicodeDecodeError:
            if encoding == "latin-1":
                raise
            encoding = "latin-1"  # (every byte is a character: what Windows spreadsheets and R may write)
    raise AssertionError("unreachable")  # (each restart adds a column to text, or changes the encoding once)


def csv_header(path) -> list:
    """The column names of a CSV file (its first non-blank row)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            return _header(path, file)[1]
    except UnicodeDecodeError:
        with open(path, newline="", encoding="latin-1") as file:
            return _header(path, file)[1]


def _header(path, file):
    """(dialect, header, lines read) of an open CSV file, left after its header row."""
    sample = file.read(64 * 1024)
    file.seek(0)
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    line = 0
    for row in csv.reader(iter(file.readline, ""), dialect):  # (the first non-blank row)
        line += 1
        if row and any(cell.strip() for cell in row):
            header = [name.strip() for name in row]
            if len(set(header)) != len(header):
                duplicates = sorted({name for name in header if header.count(name) > 1})
                raise ValueError(f"{path!r} has duplicate column names in its header: {duplicates}")
            return dialect, header, line
    raise ValueError(f"{path!r} needs a header row and at least one data row")


def _read(path, wanted, text, encoding):
    with open(path, newline="", encoding=encoding) as file:
        dialect, header, line = _header(path, file)
        names = header if wanted is None else list(wanted)
        unknown = [name for name in names if name not in header]
        if unknown:
            raise ValueError(f"{path!r} has no column(s) {unknown}; its columns are {header}")
        indices = [header.index(name) for name in names]
        delimiter = dialect.delimiter
        fields = len(header)
        numbers = {name: [] for name in names if name not in text}
        texts = {name: [] for name in names if name in text}
        lines = []
        while True:
            chunk = list(itertools.islice(file, CHUNK_LINES))
            if not chunk:
                break
            block = None
            if not texts and all(piece.count(delimiter) == fields - 1 and piece.strip() for piece in chunk):
                block = _numbers(chunk, delimiter, indices)
            if block is not None:
                for position, name in enumerate(names):
                    numbers[name].append(block[:, position])
                lines.append(np.arange(line + 1, line + 1 + len(chunk)))
                line += len(chunk)
                continue
            line = _slow_chunk(path, chunk, dialect, line, fields, names, indices, numbers, texts, lines)
    if not lines or not sum(len(part) for part in lines):
        raise ValueError(f"{path!r} needs a header row and at least one data row")
    columns = {}
    for name in names:  # one column at a time: the chunks of the others stay until theirs
        if name in numbers:
            columns[name] = np.concatenate(numbers.pop(name))
        else:
            columns[name] = np.array(list(itertools.chain.from_iterable(texts.pop(name))), dtype=object)
    return RawTable(tuple(header), columns, np.concatenate(lines))


def _numbers(chunk, delimiter, indices):
    """The chunk's columns ``indices`` by numpy's C parser (numbers only, no blank line, no
    delimiter inside quotes), missing values written as NaN first; None where that fails."""
    try:
        return np.loadtxt(chunk, delimiter=delimiter, usecols=indices, ndmin=2, comments=None, quotechar='"',
                          dtype=np.float64)
    except ValueError:
        pass
    pattern = _missing_pattern(delimiter)
    text = pattern.sub("nan", "".join(chunk).rstrip("\r\n"))  # (no empty field after the last line)
    try:
        return np.loadtxt(text.splitlines(), delimiter=delimiter, usecols=indices, ndmin=2, comments=None,
                          quotechar='"', dtype=np.float64)
    except ValueError:
        return None


_PATTERNS = {}


def _missing_pattern(delimiter):
    """A regular expression matching a missing value's whole field (see :data:`MISSING`)."""
    pattern = _PATTERNS.get(delimiter)
    if pattern is None:
        tokens = "|".join(re.escape(token) for token in sorted(MISSING, key=len, reverse=True) if token)
        d = re.escape(delimiter)
        pattern = _PATTERNS[delimiter] = re.compile(
            rf'(?<![^{d}\n])[ \t]*"?(?:{tokens})?"?[ \t]*(?=[{d}\r\n]|\Z)', re.IGNORECASE)
    return pattern


def _slow_chunk(path, chunk, dialect, line, fields, names, indices, numbers, texts, lines):
    """One chunk through the csv module: rows checked, numbers parsed, text kept. Returns the
    last line number read."""
    rows, row_lines = [], []
    reader = csv.reader(chunk, dialect)
    for row in reader:
        if not row or not any(cell.strip() for cell in row):
            continue
        number = line + reader.line_num
        if len(row) != fields:
            raise ValueError(f"{path!r} line {number} has {len(row)} fields, the header has {fields}")
        rows.append(row)
        row_lines.append(number)
    line += reader.line_num
    lines.append(np.asarray(row_lines, dtype=np.int64))
    for name, index in zip(names, indices):
        cells = [row[index] for row in rows]
        if name in numbers:
            values = np.empty(len(cells))
            for position, cell in enumerate(cells):
                try:
                    values[position] = float(cell)
                except ValueError:
                    if not _is_missing(cell):
                        raise _NotNumbers(name) from None
                    values[position] = math.nan
            numbers[name].append(values)
        else:
            texts[name].append([None if _is_missing(cell) else cell.strip() for cell in cells])
    return line


def missing_counts(table: RawTable, names) -> dict:
    """{column: rows missing} of ``names`` that have missing values."""
    counts = {}
    for name in names:
        values = table.columns[name]
        count = int(np.count_nonzero(np.isnan(values))) if values.dtype != object else sum(
            value is None for value in values)
        if count:
            counts[name] = count
    return counts


def missing_rows(table: RawTable, names):
    """A boolean mask of the rows where any of ``names`` is missing."""
    mask = np.zeros(table.rows, dtype=bool)
    for name in names:
        values = table.columns[name]
        mask |= np.isnan(values) if values.dtype != object else np.array([value is None for value in values],
                                                                         dtype=bool)
    return mask


def index_columns(table: RawTable, names) -> dict:
    """{column: why} of the columns among ``names`` that hold row indices or ids rather than
    features: an unnamed first column (what pandas' ``to_csv`` and R's ``write.csv`` write), a
    column named id / index / ..., or a column of numbers counting the rows (0..n-1 or 1..n)."""
    found = {}
    for name in names:
        values = table.columns[name]
        if name.strip().lower() in INDEX_NAMES:
            found[name] = ("is unnamed: a row index (as pandas' to_csv and R's write.csv write one)"
                           if name.strip().lower() in ("", "unnamed: 0") else "is named as an id")
        elif values.dtype != object and table.rows > 2:
            for start in (0, 1):
                if np.array_equal(values, np.arange(start, start + table.rows)):
                    found[name] = f"counts the rows {start}..{start + table.rows - 1}: an index"
                    break
    return found


class ColumnPlan(NamedTuple):
    """How one column of a table becomes features.

    Attributes:
        name: the column.
        kind: "number", "bool" or "category".
        fill: what a missing value becomes (a number, or a category), or None: an error.
        categories: the categories of a "category" column (one feature each), else None.
    """

    name: str
    kind: str
    fill: Any = None
    categories: Any = None

    def feature_names(self):
        if self.kind == "category":
            return [f"{self.name}={category}" for category in self.categories]
        return [self.name]


def _as_bool(values):
    """1.0 / 0.0 / NaN of a text column of True/False (any case), or None if it is not one."""
    lowered = [None if value is None else value.lower() for value in values]
    if not all(value in (None, _TRUE, _FALSE) for value in lowered) or all(value is None for value in lowered):
        return None
    return np.array([math.nan if value is None else float(value == _TRUE) for value in lowered])


class TablePlan:
    """The preprocessing of a table's feature columns, fitted on training rows (see the module).

    Attributes:
        columns: the :class:`ColumnPlan` of each feature column, in order.
        feature_names: the features it makes, in order.
    """

    def __init__(self, columns):
        self.columns = tuple(ColumnPlan(*column) if not isinstance(column, ColumnPlan) else column
                             for column in columns)
        self.feature_names = tuple(name for column in self.columns for name in column.feature_names())

    @classmethod
    def fit(cls, table: RawTable, names, missing="error") -> "TablePlan":
        """The plan of columns ``names`` of ``table`` (the training rows).

        Args:
            missing: "error" (a missing value is an error when transformed), "mean" or "median"
                (numbers filled with the training rows' mean / median, categories with the most
                frequent one), or "drop" (the caller drops such rows; here as "error").

        Raises:
            ValueError: a text column with too many categories, or a column with no value.
        """
        plans = []
        for name in names:
            values, kind = table.columns[name], "number"
            if values.dtype == object:
                as_bool = _as_bool(values)
                if as_bool is not None:
                    values, kind = as_bool, "bool"
                else:
                    plan = _category_plan(table, name, values, missing)
                    if plan is not None:
                        plans.append(plan)
                        continue
                    # (mostly numbers, the text in other rows: transforming those rows names it)
                    values = np.array([math.nan if value is None else float(value) for value in values])
            fill = None
            present = values[~np.isnan(values)]
            if present.size == 0:
                raise ValueError(f"column {name!r} has no value in the training rows")
            if missing in ("mean", "median"):
                fill = float(np.mean(present) if missing == "mean" else np.median(present))
            plans.append(ColumnPlan(name, kind, fill, None))
        return cls(plans)

    def transform(self, table: RawTable, source="the data"):
        """(X float64 (rows, features), unseen): the features of ``table``, and {column: rows
        with a category not seen in training}.

        Raises:
            ValueError: a missing value where the plan has no fill, a value that is not a number
                in a number column, infinity, or text that is not True/False in a bool column;
                named by column and line.
        """
        X = np.empty((table.rows, len(self.feature_names)))
        unseen = {}
        offset = 0
        for column in self.columns:
            values = table.columns[column.name]
            if column.kind == "category":
                width = len(column.categories)
                index = {category: position for position, category in enumerate(column.categories)}
                block = np.zeros((table.rows, width))
                misses = 0
                for row, value in enumerate(values):
                    if value is None:
                        if column.fill is None:
                            raise self._missing(table, column, row, source)
                        value = column.fill
                    if not isinstance(value, str):  # (a column of numbers where text was trained)
                        value = _number_text(value)
                    position = index.get(value)
                    if position is None:
                        misses += 1
                    else:
                        block[row, position] = 1.0
                if misses:
                    unseen[column.name] = misses
                X[:, offset:offset + width] = block
                offset += width
                continue
            if values.dtype == object:
                numbers = _as_bool(values) if column.kind == "bool" else None
                if numbers is None:
                    row = next((row for row, value in enumerate(values) if value is not None and (
                        column.kind == "bool" or _float_or_none(value) is None)), None)
                    if row is None and column.kind == "number":
                        numbers = np.array([math.nan if value is None else float(value) for value in values])
                    else:
                        expected = "True or False" if column.kind == "bool" else "a number"
                        raise ValueError(f"{source} line {table.lines[row]}, column {column.name!r}: "
                                         f"{values[row]!r} is not {expected}")
                values = numbers
            missing = np.isnan(values)
            if missing.any():
                if column.fill is None:
                    raise self._missing(table, column, int(np.argmax(missing)), source)
                values = np.where(missing, column.fill, values)
            if not np.all(np.isfinite(values)):
                row = int(np.argmax(~np.isfinite(values)))
                raise ValueError(f"{source} line {table.lines[row]}, column {column.name!r}: {values[row]} is not a "
                                 "finite number")
            X[:, offset] = values
            offset += 1
        return X, unseen

    def _missing(self, table, column, row, source):
        return ValueError(f"{source} line {table.lines[row]}, column {column.name!r}: the value is missing, and "
                          "the model has no value to fill it with (train with --missing mean or median, or fill "
                          "it)")

    def to_json(self) -> list:
        return [{"name": column.name, "kind": column.kind, "fill": column.fill,
                 **({"categories": list(column.categories)} if column.categories is not None else {})}
                for column in self.columns]

    @classmethod
    def from_json(cls, values) -> "TablePlan":
        if not isinstance(values, list):
            raise ValueError("the table plan must be a list of columns")
        columns = []
        for entry in values:
            if not isinstance(entry, dict) or entry.get("kind") not in ("number", "bool", "category") or \
                    not isinstance(entry.get("name"), str):
                raise ValueError(f"bad column in the table plan: {entry!r}")
            categories = entry.get("categories")
            if entry["kind"] == "category" and (not isinstance(categories, list) or not categories):
                raise ValueError(f"the category column {entry['name']!r} of the table plan has no categories")
            columns.append(ColumnPlan(entry["name"], entry["kind"], entry.get("fill"),
                                      None if categories is None else tuple(categories)))
        return cls(columns)

    def __repr__(self):
        return f"TablePlan({[column.name for column in self.columns]})"


class TableInfo(NamedTuple):
    """What a model trained on a CSV table keeps of it (``model.data.table``; saved with it).

    Attributes:
        plan: the :class:`TablePlan` of its feature columns.
        ids: the columns left out as row indices or ids (``mlp-xp predict`` copies the first
            into its output when the file has it).
        drop_missing: trained with ``--missing drop``: ``evaluate`` leaves out rows with a missing
            feature and ``predict`` writes no prediction for them (rather than refusing the file).
    """

    plan: Any
    ids: tuple = ()
    drop_missing: bool = False

    def to_json(self) -> dict:
        return {"columns": self.plan.to_json(), "ids": list(self.ids), "drop_missing": bool(self.drop_missing)}

    @classmethod
    def from_json(cls, values) -> "TableInfo":
        if not isinstance(values, dict) or not isinstance(values.get("ids", []), list):
            raise ValueError("the table metadata must be an object with 'columns' and 'ids'")
        return cls(TablePlan.from_json(values.get("columns")), tuple(str(name) for name in values.get("ids", [])),
                   bool(values.get("drop_missing", False)))


_NOT_CATEGORIES = [  # text columns that one-hot encoding would silently misread
    (re.compile(r"^[+-]?\d+,\d+$"), "numbers with decimal commas",
     "write the file with decimal points, or leave the column out (--drop)"),
    (re.compile(r"^\d{4}-\d{1,2}-\d{1,2}([ T].*)?$|^\d{1,2}/\d{1,2}/\d{2,4}$"), "dates",
     "a new date would match no category; turn it into a number (days, a year) or leave it out (--drop)"),
]


def _category_plan(table, name, values, missing):
    """The plan of a text column of categories; None for a column of numbers whose training rows
    hold no text (its text is elsewhere)."""
    present = [value for value in values if value is not None]
    for pattern, what, hint in _NOT_CATEGORIES:
        if present and sum(bool(pattern.match(value)) for value in present) * 2 > len(present):
            example = next(value for value in present if pattern.match(value))
            raise ValueError(f"column {name!r} holds {what} ({example!r}), not categories: {hint}")
    numbers = sum(_float_or_none(value) is not None for value in present)
    if numbers * 2 > len(present):  # mostly numbers: the others are mistakes, not categories
        row = next((row for row, value in enumerate(values) if value is not None and _float_or_none(value) is None),
                   None)
        if row is None:
            return None
        raise ValueError(f"line {table.lines[row]}, column {name!r}: {values[row]!r} is not a number, where most of "
                         "the column's values are (fix it, or make it missing: empty or NA)")
    categories = sorted(set(present))
    if len(categories) > MAX_CATEGORIES:
        raise ValueError(f"column {name!r} holds text with {len(categories)} distinct values (more than "
                         f"{MAX_CATEGORIES}): names or free text rather than categories; leave it out (--drop)")
    if not categories:
        raise ValueError(f"column {name!r} has no value in the training rows")
    fill = None
    if missing in ("mean", "median"):  # the most frequent category (the first of equals)
        counts = {category: 0 for category in categories}
        for value in present:
            counts[value] += 1
        fill = max(categories, key=lambda category: counts[category])
    return ColumnPlan(name, "category", fill, tuple(categories))


def _float_or_none(text):
    try:
        return float(text)
    except ValueError:
        return None


def _number_text(value):
    """A number as the text a CSV would hold it in (``3.0`` -> "3")."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
