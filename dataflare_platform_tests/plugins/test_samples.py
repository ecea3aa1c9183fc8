"""Every sample plugin, built from source, equals a Polars/Python reference."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from dataflare_platform.errors import ConfigError
from dataflare_platform.plugins import load_plugin


def prices(n: int, seed: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    values = rng.integers(-(10**12), 10**12, n)
    nulls = rng.random(n) < 0.1
    return pl.DataFrame({"id": np.arange(n), "price": values}).with_columns(
        pl.when(pl.lit(pl.Series(nulls))).then(None).otherwise(pl.col("price")).alias("price")
    )


@pytest.mark.parametrize("n", [0, 1, 7, 1000, 65_536])
def test_currency_equals_polars(built, cache_dir, n):
    plugin = load_plugin(built["currency"], cache_dir=cache_dir)
    df = prices(n)
    expected = df.with_columns((pl.col("price") * 0.908).alias("price_eur"))
    assert_frame_equal(plugin.map(df), expected)
    assert_frame_equal(plugin(df), expected)  # the engine's BatchPlugin entry point


def test_currency_reuses_its_arena_across_batches_and_slices(built, cache_dir):
    plugin = load_plugin(built["currency"], params={"rate": 1.5}, cache_dir=cache_dir)
    big = prices(10_000, seed=2)
    for df in (big, big.slice(3, 100), big.slice(9_000), prices(5, seed=3)):
        expected = df.with_columns((pl.col("price") * 1.5).alias("price_eur"))
        assert_frame_equal(plugin.map(df), expected)


def test_currency_refuses_bad_params(built, cache_dir):
    with pytest.raises(ConfigError) as err:
        load_plugin(built["currency"], params={"rate": "high", "speed": 1}, cache_dir=cache_dir)
    assert set(err.value.fields) == {"params.rate", "params.speed"}


PII = re.compile(r"(?P<email>[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+)|(?P<card>\d(?:[ -]?\d)*)", re.ASCII)


def mask_reference(s: str | None) -> str | None:
    if s is None:
        return None

    def repl(m: re.Match[str]) -> str:
        if m.group("email"):
            return "***@" + m.group("email").split("@", 1)[1]
        run = m.group("card")
        digits = sum(c.isdigit() for c in run)
        if not 13 <= digits <= 19:
            return run
        out, seen = [], 0
        for c in run:
            if c.isdigit():
                seen += 1
                out.append("*" if seen <= digits - 4 else c)
            else:
                out.append(c)
        return "".join(out)

    return PII.sub(repl, s)


def texts(n: int, seed: int = 5) -> list[str | None]:
    rng = np.random.default_rng(seed)
    parts = [
        "alice@example.com",
        "a@b.co",
        "x.y+z@mail-host.org.",
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "1234567890123",
        "123",
        "call 555-1234",
        "héllo wörld ✓",
        "@nope",
        "end@",
        " ",
        "id42",
        "99999999999999999999",
    ]
    out: list[str | None] = []
    for _ in range(n):
        if rng.random() < 0.1:
            out.append(None)
            continue
        k = int(rng.integers(0, 5))
        out.append(" ".join(parts[int(i)] for i in rng.integers(0, len(parts), k)))
    return out


@pytest.mark.parametrize("n", [0, 1, 50, 5_000])
def test_pii_mask_equals_python_reference(built, cache_dir, n):
    plugin = load_plugin(built["pii_mask"], cache_dir=cache_dir)
    values = texts(n)
    df = pl.DataFrame({"text": pl.Series(values, dtype=pl.String)})
    got = plugin.map(df)["text"].to_list()
    assert got == [mask_reference(v) for v in values]


def test_pii_mask_grows_its_output_when_masks_are_longer(built, cache_dir):
    plugin = load_plugin(built["pii_mask"], cache_dir=cache_dir, columns={"text": "note"})
    values = ["a@b"] * 2_000  # each row grows from 3 to 5 bytes: NEED_MORE, then retry
    got = plugin.map(pl.DataFrame({"note": values}))["note"].to_list()
    assert got == ["***@b"] * 2_000


def mask_with(s: str | None, lo: int, hi: int) -> str | None:
    """``mask_reference`` with the digit bounds as parameters."""
    if s is None:
        return None

    def repl(m: re.Match[str]) -> str:
        if m.group("email"):
            return "***@" + m.group("email").split("@", 1)[1]
        run = m.group("card")
        digits = sum(c.isdigit() for c in run)
        if not lo <= digits <= hi:
            return run
        seen, out = 0, []
        for c in run:
            seen += c.isdigit()
            out.append("*" if c.isdigit() and seen <= digits - 4 else c)
        return "".join(out)

    return PII.sub(repl, s)


@pytest.mark.parametrize(("lo", "hi"), [(13, 19), (1, 4), (2, 40), (30, 60)])
def test_pii_mask_fuzz_equals_reference(built, cache_dir, lo, hi):
    """Random strings dense in digits, separators and e-mail characters: runs of every
    length (inside and beyond the 32-byte SIMD window), at row ends, and back to back."""
    plugin = load_plugin(
        built["pii_mask"], params={"min_digits": lo, "max_digits": hi}, cache_dir=cache_dir
    )
    rng = np.random.default_rng(lo * 100 + hi)
    alphabet = list("0123456789012345678901234567890123456789 - -- @@a.b_%+xZé✓")
    values: list[str | None] = []
    for _ in range(4_000):
        n = int(rng.integers(0, 90))
        values.append("".join(rng.choice(alphabet, n)) if rng.random() > 0.05 else None)
    df = pl.DataFrame({"text": pl.Series(values, dtype=pl.String)})
    for part in (df, df.slice(1, 2_500), df.head(1)):
        got = plugin.map(part)["text"].to_list()
        assert got == [mask_with(v, lo, hi) for v in part["text"].to_list()]
