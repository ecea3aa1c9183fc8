"""A vectorised scanner for raw PII in string columns, and the policy that judges it.

Each detector is a regular expression run by Polars over the whole column; payment
cards are then confirmed by a Luhn check over a numpy digit matrix, because most
13–19 digit runs (order ids, timestamps, hashes) are not cards and a scanner that cries
wolf gets switched off. Findings carry redacted samples only: the report of a PII scan
must not itself become a PII leak.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field

from dataflare_platform.errors import NotFoundError
from dataflare_platform.models import StrictModel


class PiiKind(StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    CARD = "card"
    NATIONAL_ID = "national_id"


class Classification(StrEnum):
    """What a column's owner declared about it; a column absent from the map is
    unclassified and may hold no PII at all."""

    MASKED = "pii_masked"
    ENCRYPTED = "pii_encrypted"
    ALLOWED = "pii_allowed"  # raw PII, explicitly accepted


# Rust regex (no look-around): boundaries are spelled out with \b and character classes.
# ASCII digits only: \d would also accept other scripts' digits.
_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
# International numbers need a leading "+" that does not sit inside a token (base64
# ciphertext holds "+" too) and 8–15 digits; US-like numbers need separators, so a
# plain integer is never a phone number.
_PHONE = (
    r"(?:(?:^|[\s,;:(\[])\+[1-9](?:[ .()-]{0,2}[0-9]){7,14}\b"
    r"|(?:\b1[ .-])?(?:\([0-9]{3}\) ?|\b[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}\b)"
)
# 13–19 digits, optionally grouped by single spaces or dashes; Luhn decides.
_CARD = r"\b(?:[0-9][ -]?){12,18}[0-9]\b"
# US SSN ddd-dd-dddd: area 001–899 except 666, group 01–99, serial 0001–9999.
_SSN = (
    r"\b(?:00[1-9]|0[1-9][0-9]|[1-578][0-9]{2}|6[0-57-9][0-9]|66[0-57-9])"
    r"-(?:0[1-9]|[1-9][0-9])"
    r"-(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})\b"
)
PATTERNS: dict[PiiKind, str] = {
    PiiKind.EMAIL: _EMAIL,
    PiiKind.PHONE: _PHONE,
    PiiKind.CARD: _CARD,
    PiiKind.NATIONAL_ID: _SSN,
}
_CARD_WIDTH = 19  # longest card number; shorter ones are left-padded with zeros


class EncryptionBinding(StrictModel):
    """What the ``pii_encrypted`` columns' ciphertexts are bound to (the ``encrypt``
    step's ``dataset``/``key``/``domains``), so the check can decrypt a sample."""

    dataset: str = Field(min_length=1)
    key: str | None = None
    domains: dict[str, str] = Field(default_factory=dict)


class PiiPolicy(StrictModel):
    """Which columns hold PII and in what form, and which columns to scan; for
    ``pii_encrypted`` columns, the binding their ciphertexts are checked against."""

    columns: dict[str, Classification] = Field(default_factory=dict)
    scan: Literal["all_strings"] | list[str] = "all_strings"
    encryption: EncryptionBinding | None = None


@dataclass(frozen=True)
class PiiFinding:
    column: str
    kind: PiiKind
    rows: int  # rows holding at least one match
    total_rows: int
    samples: tuple[str, ...]  # redacted matches, never the raw value

    @property
    def share(self) -> float:
        return self.rows / self.total_rows if self.total_rows else 0.0


@dataclass(frozen=True)
class PiiViolation:
    column: str
    kind: PiiKind
    rows: int
    classification: Classification | None
    message: str


def luhn_valid(digits: pl.Series) -> np.ndarray:
    """Luhn check of strings of 1–19 ASCII digits, as one numpy pass over a digit
    matrix (zero-padding on the left does not change a Luhn sum)."""
    if digits.len() == 0:
        return np.zeros(0, dtype=bool)
    matrix = (
        digits.str.zfill(_CARD_WIDTH)
        .str.split("")
        .list.to_array(_CARD_WIDTH)
        .cast(pl.Array(pl.UInt8, _CARD_WIDTH))
        .to_numpy()
        .astype(np.int16)
    )
    # Double every second digit counting from the rightmost (check) digit.
    doubled = (_CARD_WIDTH - 1 - np.arange(_CARD_WIDTH)) % 2 == 1
    matrix[:, doubled] *= 2
    matrix[matrix > 9] -= 9
    return matrix.sum(axis=1) % 10 == 0


def _card_matches(values: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Row mask of rows holding a Luhn-valid card, and the first valid card per row."""
    rows = pl.DataFrame({"v": values}).with_row_index("row")
    candidates = (
        rows.select("row", cand=pl.col("v").str.extract_all(_CARD))
        .explode("cand")
        .drop_nulls("cand")
    )
    digits = candidates.get_column("cand").str.replace_all(r"[ -]", "")
    valid = candidates.filter(pl.Series(luhn_valid(digits))).unique("row", keep="first")
    first = (
        rows.select("row")
        .join(valid, on="row", how="left", maintain_order="left")
        .get_column("cand")
    )
    return first.is_not_null(), first


def detect(values: pl.Series) -> dict[PiiKind, tuple[pl.Series, pl.Series]]:
    """Per kind: a boolean row mask and the first match of each row (null elsewhere).
    Nulls match nothing."""
    out: dict[PiiKind, tuple[pl.Series, pl.Series]] = {}
    for kind, pattern in PATTERNS.items():
        if kind is PiiKind.CARD:
            out[kind] = _card_matches(values)
            continue
        first = values.str.extract(f"({pattern})", 1)
        if kind is PiiKind.PHONE:  # drop the character the leading "+" had to follow
            first = first.str.replace(r"^[\s,;:(\[]+\+", "+")
        out[kind] = (first.is_not_null(), first)
    return out


def redact(values: pl.Series) -> pl.Series:
    """Letters and digits become ``*`` except the last four characters of values of
    eight or more characters: enough for a reviewer to find the row, not to use it."""
    length = pl.col("v").str.len_chars()
    cut = length - pl.when(length >= 8).then(4).otherwise(0)
    head = pl.col("v").str.slice(0, cut).str.replace_all(r"[A-Za-z0-9]", "*")
    tail = pl.col("v").str.slice(cut)
    return pl.DataFrame({"v": values}).select(pl.concat_str(head, tail)).to_series()


def _as_frame(data: pl.DataFrame | pa.Table) -> pl.DataFrame:
    if isinstance(data, pl.DataFrame):
        return data
    frame = pl.from_arrow(data)
    if not isinstance(frame, pl.DataFrame):
        raise TypeError(f"expected a table, got {type(data).__name__}")
    return frame


def string_columns(frame: pl.DataFrame) -> list[str]:
    return [
        name
        for name, dtype in frame.schema.items()
        if dtype == pl.String or dtype == pl.Categorical or dtype == pl.Enum
    ]


def scan_pii(
    data: pl.DataFrame | pa.Table,
    columns: Sequence[str] | Literal["all_strings"] = "all_strings",
    samples: int = 3,
) -> list[PiiFinding]:
    """Findings per (column, kind) with at least one matching row. Named columns that are
    not strings are scanned as text (a card number kept in an Int64 is still a card); a
    named column that does not exist is an error, not a clean scan."""
    frame = _as_frame(data)
    if columns == "all_strings":
        names = string_columns(frame)
    else:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise NotFoundError(f"columns to scan are not in the data: {missing}")
        names = list(columns)
    findings: list[PiiFinding] = []
    for name in names:
        values = frame.get_column(name).cast(pl.String)
        for kind, (mask, first) in detect(values).items():
            count = int(mask.sum())
            if count == 0:
                continue
            shown = redact(first.filter(mask).head(samples))
            findings.append(PiiFinding(name, kind, count, frame.height, tuple(shown.to_list())))
    return findings


def pii_violations(
    findings: Sequence[PiiFinding], classes: Mapping[str, Classification]
) -> list[PiiViolation]:
    """Raw PII is a violation in an unclassified column, and in a column declared masked
    or encrypted (masking or encryption did not happen for those rows). Only columns
    declared ``pii_allowed`` may hold it."""
    out: list[PiiViolation] = []
    for f in findings:
        declared = classes.get(f.column)
        if declared is Classification.ALLOWED:
            continue
        if declared is None:
            message = (
                f"column {f.column!r} is not classified but {f.rows} of {f.total_rows} rows"
                f" ({f.share:.1%}) hold raw {f.kind}, e.g. {', '.join(f.samples)}"
            )
        else:
            message = (
                f"column {f.column!r} is declared {declared} but {f.rows} of"
                f" {f.total_rows} rows ({f.share:.1%}) still hold raw {f.kind},"
                f" e.g. {', '.join(f.samples)}"
            )
        out.append(PiiViolation(f.column, f.kind, f.rows, declared, message))
    return out


def scan_for_policy(
    data: pl.DataFrame | pa.Table, policy: PiiPolicy
) -> tuple[list[PiiFinding], list[PiiViolation]]:
    """Scan what the policy says to scan, plus every classified column (a column declared
    masked is exactly where unmasked rows must be caught); the findings, and those that
    break the policy."""
    frame = _as_frame(data)
    names = string_columns(frame) if policy.scan == "all_strings" else list(policy.scan)
    declared = [c for c in policy.columns if c not in names]
    missing = [c for c in declared if c not in frame.columns]
    if missing:
        raise NotFoundError(f"classified columns are not in the data: {missing}")
    # Binary columns are not text: a pii_encrypted one is verified as ciphertext instead
    # (compliance.ciphertext); casting random bytes to text would fail.
    scanned = [c for c in [*names, *declared] if frame.schema[c] != pl.Binary]
    findings = scan_pii(frame, scanned)
    return findings, pii_violations(findings, policy.columns)


def check_pii(data: pl.DataFrame | pa.Table, policy: PiiPolicy) -> list[PiiViolation]:
    """The violations of ``policy`` in ``data`` (see :func:`scan_for_policy`)."""
    return scan_for_policy(data, policy)[1]


def mask_sample(data: pl.DataFrame | pa.Table, policy: PiiPolicy | None) -> pl.DataFrame:
    """A sample of rows safe to show in a preview (Dagster metadata, reports).

    Every column the policy classifies (``pii_masked``, ``pii_encrypted`` and also
    ``pii_allowed``: allowed in the table is not allowed in front of every viewer) is
    redacted whole; in the other columns, cells where a detector finds PII are redacted.
    Fails closed: without a policy (the dataset's classification is unknown) every string
    column is redacted whole. Values become strings where redacted."""
    frame = _as_frame(data)
    strings = set(string_columns(frame))
    out = []
    for name in frame.columns:
        column = frame[name]
        classified = policy is not None and name in policy.columns
        if classified or (policy is None and name in strings):
            out.append(redact(column.cast(pl.String)).alias(name))
            continue
        text = column.cast(pl.String)
        found = pl.Series(name, [False] * frame.height, dtype=pl.Boolean)
        for hit, _ in detect(text).values():
            found = found | hit.fill_null(False)
        if found.any():
            out.append(
                pl.DataFrame({"t": text, "f": found, "r": redact(text)})
                .select(pl.when(pl.col("f")).then(pl.col("r")).otherwise(pl.col("t")))
                .to_series()
                .alias(name)
            )
        else:
            out.append(column)
    return pl.DataFrame(out) if out else frame
