"""Decoding landed files (NDJSON, CSV, Parquet, optionally gzip-compressed) into a
declared schema, with one dead letter per record that does not fit.

Every record found in a file ends up either as a row of the table or as a dead letter,
so ``rows_in == table.num_rows + dead.num_rows`` always holds. Offsets of dead letters:

- NDJSON and CSV: the record's 1-based line number in the file (what an editor shows;
  a CSV record with quoted newlines is numbered by its first line); blank lines are
  not records;
- Parquet: the 0-based row index (what readers use);
- a file that cannot be read at all: one dead letter with offset -1 for the whole file,
  its bytes as payload when they are at most ``max_payload_bytes``.

Values are converted with Arrow's casts (the same parsers as the JSON decoder's), so a
timestamp, number or boolean reads the same whatever the file format. A cast that fails
for a column is bisected to find the bad rows: a clean column costs one cast.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from dataflare_platform.engine import arrays
from dataflare_platform.errors import DataflareError
from dataflare_platform.events.codec import (
    DEAD_LETTER_SCHEMA,
    JsonDecoder,
    dead_letters,
    encode_json,
)
from dataflare_platform.events.schema_policy import (
    DEFAULT_SCHEMA_POLICY,
    decode_apart_from,
    mismatch,
    split_records,
)

FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
}
_SMALL = 32  # below this many rows a failing cast is retried row by row, not bisected


def file_format(name: str) -> tuple[str, bool] | None:
    """(format, gzip-compressed) from a file name, or None for a name we do not ingest."""
    lower = name.lower()
    compressed = lower.endswith(".gz")
    if compressed:
        lower = lower[:-3]
    for suffix, fmt in FORMATS.items():
        if lower.endswith(suffix):
            return fmt, compressed
    return None


class UnreadableFileError(DataflareError, ValueError):
    """The file as a whole cannot be decoded (corrupt, wrong format, missing columns)."""


@dataclass
class FileDecoded:
    table: pa.Table  # good records, in the declared schema
    dead: pa.Table  # DEAD_LETTER_SCHEMA
    rows_in: int  # records found: table rows + dead letters
    failed: str | None = None  # why the whole file was dead-lettered


DEFAULT_MAX_FILE_BYTES = 256 << 20  # a landed file is decoded in memory


class FileDecoder:
    def __init__(
        self,
        schema: pa.Schema,
        max_payload_bytes: int = 1 << 20,
        on_schema_mismatch: str = DEFAULT_SCHEMA_POLICY,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        self.schema = schema
        self.max_payload_bytes = max_payload_bytes
        self.max_file_bytes = max_file_bytes  # a file's bytes, and what a .gz inflates to
        self.policy = on_schema_mismatch  # see events.schema_policy
        self._json = JsonDecoder(schema, max_payload_bytes)

    def decode(
        self, data: bytes, fmt: str, compressed: bool, source: str, partition: str
    ) -> FileDecoded:
        raw = data
        try:
            if compressed:
                data = self._gunzip(data)
            if fmt == "ndjson":
                return self._ndjson(data, source, partition)
            if fmt == "csv":
                return self._csv(data, source, partition)
            return self._parquet(data, source, partition)
        except UnreadableFileError as err:
            keep = raw if len(raw) <= self.max_payload_bytes else b""
            reason = f"unreadable {fmt} file: {err}"
            if not keep:
                reason += f" ({len(raw)} bytes, left in place)"
            dead = dead_letters(source, partition, [-1], [reason], [keep])
            return FileDecoded(arrays.empty_table(self.schema), dead, 1, failed=reason)

    def _gunzip(self, data: bytes) -> bytes:
        """Inflate at most ``max_file_bytes``: 2 MB of gzip can stand for 2 GiB of
        newlines (a decompression bomb took 18 GB and four minutes before this)."""
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
                out = f.read(self.max_file_bytes + 1)
        except (OSError, EOFError, zlib.error) as err:
            raise UnreadableFileError(f"not gzip data: {err}") from err
        if len(out) > self.max_file_bytes:
            raise UnreadableFileError(
                f"decompresses to more than max_file_bytes ({self.max_file_bytes} bytes)"
            )
        return out

    # -- NDJSON --------------------------------------------------------------------------
    def _ndjson(self, data: bytes, source: str, partition: str) -> FileDecoded:
        payloads, numbers = [], []
        for number, line in enumerate(data.split(b"\n"), start=1):
            line = line.removesuffix(b"\r")
            if line.strip():
                payloads.append(line)
                numbers.append(number)
        mismatched = split_records(payloads, self.schema, self.policy, self.max_payload_bytes)
        if mismatched and self.policy == "refuse_file":
            first = min(mismatched)
            raise UnreadableFileError(f"line {numbers[first]}: {mismatched[first]}")
        decoded = decode_apart_from(self._json, payloads, numbers, source, partition, mismatched)
        return FileDecoded(decoded.table, decoded.dead, len(payloads))

    # -- CSV -----------------------------------------------------------------------------
    def _csv(self, data: bytes, source: str, partition: str) -> FileDecoded:
        data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
        lines = data.split(b"\n")
        header_at = next((i for i, line in enumerate(lines) if line.strip(b"\r")), None)
        if header_at is None:
            return FileDecoded(arrays.empty_table(self.schema), self._no_dead(), 0)
        try:
            header = next(csv.reader([lines[header_at].decode().removesuffix("\r")]))
        except (UnicodeDecodeError, csv.Error) as err:
            raise UnreadableFileError(f"bad header line: {err}") from err
        missing = [f.name for f in self.schema if f.name not in header and not f.nullable]
        if missing:
            raise UnreadableFileError(f"missing required columns {missing}")
        header_problem = mismatch(header, self.schema, self.policy)
        if header_problem is not None and self.policy == "refuse_file":
            raise UnreadableFileError(f"header: {header_problem}")
        fast = self._csv_fast(data, header, lines, header_at)
        records = fast if fast is not None else self._csv_exact(lines, header, header_at)
        strings, numbers, raws, bad = records
        rows_in = len(numbers) + len(bad)  # records parsed + records malformed as CSV
        if header_problem is not None:
            # Every record is read under the wrong header: none is a row.
            bad.extend(
                (n, f"header: {header_problem}", r) for n, r in zip(numbers, raws, strict=True)
            )
            bad.sort(key=lambda b: b[0])
            dead = dead_letters(
                source, partition, [b[0] for b in bad], [b[1] for b in bad], [b[2] for b in bad]
            )
            return FileDecoded(arrays.empty_table(self.schema), dead, rows_in)
        table, reasons = convert(strings, self.schema, from_text=True, num_rows=len(numbers))
        for i, reason in reasons.items():
            bad.append((numbers[i], reason, raws[i]))
        bad.sort(key=lambda b: b[0])
        dead = dead_letters(
            source, partition, [b[0] for b in bad], [b[1] for b in bad], [b[2] for b in bad]
        )
        return FileDecoded(table, dead, rows_in)

    def _csv_fast(self, data: bytes, header: list[str], lines: list[bytes], header_at: int):
        """Arrow's reader, valid when every record is exactly one line (checked: as many
        rows as non-empty lines and no malformed row); None sends the file to the exact
        reader."""
        invalid = []

        def on_invalid(row: pa_csv.InvalidRow) -> str:
            invalid.append(row)
            return "skip"

        wanted = [f.name for f in self.schema if f.name in header]
        try:
            table = pa_csv.read_csv(
                io.BytesIO(b"\n".join(lines[header_at:])),
                read_options=pa_csv.ReadOptions(use_threads=False),
                parse_options=pa_csv.ParseOptions(
                    newlines_in_values=True, invalid_row_handler=on_invalid
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict.fromkeys(header, pa.large_string()),
                    strings_can_be_null=False,
                    include_columns=wanted,
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None  # e.g. invalid UTF-8 or duplicate names: the exact reader says which
        numbered = [
            (i + 1, line.removesuffix(b"\r"))
            for i, line in enumerate(lines)
            if i > header_at and line.removesuffix(b"\r")
        ]
        if invalid or table.num_rows != len(numbered):
            return None
        return table, [n for n, _ in numbered], [raw for _, raw in numbered], []

    def _csv_exact(self, lines: list[bytes], header: list[str], header_at: int):
        """Python's csv module, record by record: handles quoted newlines, wrong field
        counts and bad UTF-8 per record, with each record's exact raw lines."""
        text = [line.decode("utf-8", "surrogateescape") + "\n" for line in lines]
        reader = csv.reader(iter(text[header_at + 1 :]))
        index = {name: i for i, name in enumerate(header)}
        wanted = [f.name for f in self.schema if f.name in index]
        columns: dict[str, list[str]] = {name: [] for name in wanted}
        numbers, raws, bad = [], [], []
        consumed = header_at + 1
        while True:
            first = consumed
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                consumed = header_at + 1 + reader.line_num
                raw = b"\n".join(lines[first:consumed])
                bad.append((first + 1, f"malformed CSV: {err}", raw))
                continue
            consumed = header_at + 1 + reader.line_num
            raw = b"\n".join(line.removesuffix(b"\r") for line in lines[first:consumed])
            if not fields:
                continue  # a blank line
            if len(fields) != len(header):
                bad.append((first + 1, f"expected {len(header)} fields, found {len(fields)}", raw))
                continue
            try:
                values = [fields[index[name]].encode().decode() for name in wanted]
            except UnicodeEncodeError:
                bad.append((first + 1, "not UTF-8 text", raw))
                continue
            for name, value in zip(wanted, values, strict=True):
                columns[name].append(value)
            numbers.append(first + 1)
            raws.append(raw)
        table = pa.table({n: arrays.strings(v, pa.large_string()) for n, v in columns.items()})
        return table, numbers, raws, bad

    # -- Parquet -------------------------------------------------------------------------
    def _parquet(self, data: bytes, source: str, partition: str) -> FileDecoded:
        try:
            # Not pq.read_table: it goes through pyarrow.dataset, which imports pandas.
            table = pq.ParquetFile(pa.BufferReader(data)).read()
        except (pa.ArrowException, OSError, ValueError) as err:
            raise UnreadableFileError(str(err)) from err
        missing = [f.name for f in self.schema if f.name not in table.column_names]
        if [m for m in missing if not self.schema.field(m).nullable]:
            raise UnreadableFileError(f"missing required columns {missing}")
        problem = mismatch(table.column_names, self.schema, self.policy)
        if problem is not None:
            if self.policy == "refuse_file":
                raise UnreadableFileError(f"columns: {problem}")
            rows = list(range(table.num_rows))
            dead = dead_letters(
                source,
                partition,
                rows,
                [f"columns: {problem}"] * len(rows),
                _row_payloads(table, rows),
            )
            return FileDecoded(arrays.empty_table(self.schema), dead, table.num_rows)
        good, reasons = convert(table, self.schema, from_text=False)
        rows = sorted(reasons)
        payloads = _row_payloads(table, rows)
        dead = dead_letters(source, partition, rows, [reasons[i] for i in rows], payloads)
        return FileDecoded(good, dead, table.num_rows)

    def _no_dead(self) -> pa.Table:
        return arrays.empty_table(DEAD_LETTER_SCHEMA)


def _row_payloads(table: pa.Table, rows: list[int]) -> list[bytes]:
    """Bad Parquet rows as JSON (the file's own bytes for one row do not exist)."""
    if not rows:
        return []
    try:
        return encode_json(table.take(arrays.from_pylist(rows, pa.int64())))
    except Exception:  # a type JSON cannot hold: keep the row's text form instead
        return [repr(table.slice(i, 1).to_pylist()[0]).encode() for i in rows]


def convert(
    table: pa.Table, schema: pa.Schema, from_text: bool, num_rows: int | None = None
) -> tuple[pa.Table, dict[int, str]]:
    """``table`` cast to ``schema`` column by column; rows whose value does not convert
    or whose required field is null are left out and returned with a reason (first
    problem per row). Missing nullable columns are filled with nulls; ``from_text``
    reads an empty string as null for every non-text field (CSV's convention)."""
    n = table.num_rows if num_rows is None else num_rows
    reasons: dict[int, str] = {}
    columns = []
    for f in schema:
        if f.name not in table.column_names:
            columns.append(pa.nulls(n, f.type))
            if not f.nullable:
                for i in range(n):
                    reasons.setdefault(i, f"missing required field {f.name!r}")
            continue
        column = table.column(f.name).combine_chunks()
        if from_text and not _is_text(f.type):
            empty = pc.equal(column, arrays.scalar("", column.type))
            column = pc.if_else(empty, arrays.scalar(None, column.type), column)
        converted, failed = _cast(column, f.type)
        for i in failed:
            reasons.setdefault(i, f"field {f.name!r}: {column[i].as_py()!r} is not {f.type}")
        if not f.nullable and converted.null_count:
            nulls = arrays.to_numpy(converted.is_null()).nonzero()[0]
            for i in nulls.tolist():
                reasons.setdefault(i, f"missing or null required field {f.name!r}")
        columns.append(converted)
    result = pa.Table.from_arrays(columns, schema=schema.with_metadata(None))
    if reasons:
        keep = arrays.booleans([i not in reasons for i in range(n)])
        result = result.filter(keep)
    return result, reasons


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _cast_exact(column: pa.Array, target: pa.DataType) -> pa.Array:
    """``column.cast(target)``, except that text becomes a second or millisecond
    timestamp through microseconds: Arrow's parser takes only as many fraction digits as
    the unit has, so "00:00:00.001000" would fail for milliseconds although it is exact.
    The second, safe cast still refuses a value finer than the unit."""
    if _is_text(column.type) and pa.types.is_timestamp(target) and target.unit in ("s", "ms"):
        return column.cast(pa.timestamp("us", target.tz)).cast(target)
    return column.cast(target)


def _cast(column: pa.Array, target: pa.DataType) -> tuple[pa.Array, list[int]]:
    """Cast; on failure find the failing rows by bisection (they become null)."""
    if column.type.equals(target):
        return column, []
    try:
        return _cast_exact(column, target), []
    except pa.ArrowNotImplementedError:
        return pa.nulls(len(column), target), list(range(len(column)))
    except (pa.ArrowInvalid, OverflowError):
        pass
    failed: list[int] = []
    parts: list[pa.Array] = []
    _bisect(column, target, 0, failed, parts)
    return pa.concat_arrays(parts), failed


def _bisect(column: pa.Array, target: pa.DataType, base: int, failed: list[int], parts) -> None:
    if len(column) <= _SMALL:
        for i in range(len(column)):
            try:
                parts.append(_cast_exact(column.slice(i, 1), target))
            except (pa.ArrowInvalid, OverflowError):
                parts.append(pa.nulls(1, target))
                failed.append(base + i)
        return
    try:
        parts.append(_cast_exact(column, target))
        return
    except (pa.ArrowInvalid, OverflowError):
        pass
    mid = len(column) // 2
    _bisect(column.slice(0, mid), target, base, failed, parts)
    _bisect(column.slice(mid), target, base + mid, failed, parts)
