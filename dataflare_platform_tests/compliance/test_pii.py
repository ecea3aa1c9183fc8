from __future__ import annotations

import base64
import hashlib

import numpy as np
import polars as pl
import pytest

from dataflare_platform.compliance.pii import (
    Classification,
    PiiKind,
    PiiPolicy,
    check_pii,
    luhn_valid,
    pii_violations,
    redact,
    scan_pii,
)

RNG_SEED = 7


def _luhn_reference(number: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(number)):
        d = int(char)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _valid_cards(n: int, seed: int) -> list[str]:
    """Random card numbers of 13–19 digits with a correct Luhn check digit."""
    rng = np.random.default_rng(seed)
    cards = []
    for length in rng.integers(13, 20, size=n):
        body = "".join(map(str, rng.integers(0, 10, size=length - 1)))
        body = str(rng.integers(1, 10)) + body[1:]
        check = next(c for c in "0123456789" if _luhn_reference(body + c))
        cards.append(body + check)
    return cards


def _kinds(findings) -> dict[tuple[str, PiiKind], int]:
    return {(f.column, f.kind): f.rows for f in findings}


def test_luhn_matches_a_reference_implementation():
    rng = np.random.default_rng(RNG_SEED)
    numbers = ["".join(map(str, rng.integers(0, 10, size=16))) for _ in range(2000)]
    numbers += [*_valid_cards(500, RNG_SEED), "4111111111111111", "79927398713"]
    got = luhn_valid(pl.Series(numbers))
    assert got.tolist() == [_luhn_reference(n) for n in numbers]
    assert got[-2:].tolist() == [True, True]


def test_pii_planted_in_an_unclassified_column_is_found_and_fails():
    notes = ["nothing to see"] * 97 + [
        "write to jane.roe@example.org please",
        "card 4111 1111 1111 1111 on file",
        "ssn 078-05-1120",
    ]
    frame = pl.DataFrame({"id": range(100), "notes": notes})
    findings = scan_pii(frame)
    assert _kinds(findings) == {
        ("notes", PiiKind.EMAIL): 1,
        ("notes", PiiKind.CARD): 1,
        ("notes", PiiKind.NATIONAL_ID): 1,
    }
    email = next(f for f in findings if f.kind is PiiKind.EMAIL)
    assert email.total_rows == 100 and email.share == pytest.approx(0.01)
    violations = pii_violations(findings, {})
    assert {v.kind for v in violations} == {PiiKind.EMAIL, PiiKind.CARD, PiiKind.NATIONAL_ID}
    assert all(v.classification is None and "not classified" in v.message for v in violations)


def test_findings_never_carry_the_raw_values():
    frame = pl.DataFrame(
        {
            "contact": [
                "jane.roe@example.org",
                "+44 20 7946 0958",
                "5500-0000-0000-0004",
                "078-05-1120",
            ]
        }
    )
    findings = scan_pii(frame)
    samples = {f.kind: f.samples for f in findings}
    assert samples == {
        PiiKind.EMAIL: ("****.***@*******.org",),
        PiiKind.PHONE: ("+** ** **** 0958",),
        PiiKind.CARD: ("****-****-****-0004",),
        PiiKind.NATIONAL_ID: ("***-**-1120",),
    }
    messages = " ".join(v.message for v in pii_violations(findings, {}))
    for raw in frame.get_column("contact"):
        assert raw not in messages


def test_redaction_keeps_only_the_last_four_characters_of_long_values():
    assert redact(pl.Series(["4111111111111111", "ab-12", None])).to_list() == [
        "************1111",
        "**-**",
        None,
    ]


def test_masked_hashed_and_encrypted_values_are_not_flagged():
    rng = np.random.default_rng(RNG_SEED)
    emails = [f"user{i}@example.com" for i in range(500)]
    frame = pl.DataFrame(
        {
            "email": ["***@***.com", "j***@***.org", "*****@example.com"] * 100,
            "card": ["****-****-****-1234", "**** **** **** 4242", "XXXXXXXXXXXX1111"] * 100,
            "ssn": ["***-**-6789"] * 300,
            "email_hash": [hashlib.sha256(e.encode()).hexdigest() for e in emails[:300]],
            "card_token": [base64.b64encode(rng.bytes(48)).decode() for _ in range(300)],
        }
    )
    policy = PiiPolicy(
        columns={
            "email": Classification.MASKED,
            "card": Classification.MASKED,
            "ssn": Classification.MASKED,
            "email_hash": Classification.MASKED,
            "card_token": Classification.ENCRYPTED,
        }
    )
    assert scan_pii(frame) == []
    assert check_pii(frame, policy) == []


def test_raw_pii_left_in_a_masked_column_fails_but_allowed_columns_pass():
    frame = pl.DataFrame(
        {
            "email": ["***@***.com", "jane.roe@example.org", "***@***.com"],
            "contact_email": ["a.b@example.com", "c.d@example.com", None],
        }
    )
    policy = PiiPolicy(
        columns={"email": Classification.MASKED, "contact_email": Classification.ALLOWED}
    )
    violations = check_pii(frame, policy)
    assert [(v.column, v.kind, v.rows) for v in violations] == [("email", PiiKind.EMAIL, 1)]
    assert "declared pii_masked" in violations[0].message


def test_luhn_invalid_digit_runs_are_not_cards():
    rng = np.random.default_rng(RNG_SEED)
    randoms = ["".join(map(str, rng.integers(0, 10, size=16))) for _ in range(5000)]
    invalid = [n for n in randoms if not _luhn_reference(n)]
    assert len(invalid) > 4000
    # Same numbers grouped like printed cards: still not cards.
    grouped = [f"{n[:4]} {n[4:8]} {n[8:12]} {n[12:]}" for n in invalid]
    frame = pl.DataFrame({"ref": invalid + grouped})
    assert scan_pii(frame) == []

    valid = _valid_cards(1000, RNG_SEED + 1)
    dashed = [f"{n[:4]}-{n[4:8]}-{n[8:12]}-{n[12:]}" for n in valid]
    found = _kinds(scan_pii(pl.DataFrame({"pan": valid, "printed": dashed})))
    assert found == {("pan", PiiKind.CARD): 1000, ("printed", PiiKind.CARD): 1000}


def test_card_numbers_kept_as_integers_are_found_when_the_column_is_named():
    frame = pl.DataFrame({"pan": [4111111111111111, 4111111111111112, 42]})
    assert scan_pii(frame) == []  # not a string column: not scanned by default
    findings = scan_pii(frame, ["pan"])
    assert _kinds(findings) == {("pan", PiiKind.CARD): 1}


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("jane.roe@example.org", PiiKind.EMAIL, True),
        ("reach me at j_doe+tag@mail.co.uk.", PiiKind.EMAIL, True),
        ("jane.roe@example", PiiKind.EMAIL, False),
        ("@example.com", PiiKind.EMAIL, False),
        ("jane at example dot com", PiiKind.EMAIL, False),
        ("+1 415 555 2671", PiiKind.PHONE, True),
        ("+442079460958", PiiKind.PHONE, True),
        ("(415) 555-2671", PiiKind.PHONE, True),
        ("415.555.2671", PiiKind.PHONE, True),
        ("1-415-555-2671", PiiKind.PHONE, True),
        ("4155552671", PiiKind.PHONE, False),  # a plain integer
        ("12345", PiiKind.PHONE, False),
        ("555-2671", PiiKind.PHONE, False),
        ("2026-11-27", PiiKind.PHONE, False),
        ("abc+12345678xyz", PiiKind.PHONE, False),  # inside a token
        ("078-05-1120", PiiKind.NATIONAL_ID, True),
        ("ssn: 123-45-6789", PiiKind.NATIONAL_ID, True),
        ("000-12-3456", PiiKind.NATIONAL_ID, False),
        ("666-12-3456", PiiKind.NATIONAL_ID, False),
        ("912-12-3456", PiiKind.NATIONAL_ID, False),
        ("123-00-6789", PiiKind.NATIONAL_ID, False),
        ("123-45-0000", PiiKind.NATIONAL_ID, False),
        ("123456789", PiiKind.NATIONAL_ID, False),
        ("1234-56-7890", PiiKind.NATIONAL_ID, False),
        ("4111 1111 1111 1111", PiiKind.CARD, True),
        ("411111111111", PiiKind.CARD, False),  # 12 digits: too short
        ("41111111111111111111", PiiKind.CARD, False),  # 20 digits: too long
    ],
)
def test_detectors_and_near_misses(text: str, kind: PiiKind, expected: bool):
    kinds = {f.kind for f in scan_pii(pl.DataFrame({"v": [text]}))}
    assert (kind in kinds) is expected, kinds


def test_arrow_tables_are_scanned_and_unknown_columns_refused():
    frame = pl.DataFrame({"v": ["jane.roe@example.org", None]})
    findings = scan_pii(frame.to_arrow())
    assert _kinds(findings) == {("v", PiiKind.EMAIL): 1}
    with pytest.raises(KeyError, match="nope"):
        scan_pii(frame, ["nope"])
    with pytest.raises(KeyError, match="ghost"):
        check_pii(frame, PiiPolicy(columns={"ghost": Classification.MASKED}))
