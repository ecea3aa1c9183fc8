"""Rotation like a transit-encryption service: rotate, rewrap, retire, destroy; and
deterministic joins that stay correct across a rotation."""

from __future__ import annotations

import stat
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from dataflare_platform.crypto.columns import Binding, ColumnCipher, DecryptionError, key_versions
from dataflare_platform.crypto.joins import align_to_latest
from dataflare_platform.crypto.keyring import KeyDestroyedError, KeyRetiredError, UnwrapError
from dataflare_platform.crypto.settings import CryptoSettings
from dataflare_platform.errors import ConfigError, InvalidInputError

EMAILS = Binding("customers", "email")


def test_rotate_then_rewrap_moves_everything_to_the_new_version(cipher: ColumnCipher) -> None:
    values = pa.array(["a@x.io", None, "b@x.io"])
    old = cipher.encrypt(values, EMAILS)
    state = cipher.envelope.rotate("customers")
    assert state.latest == 2
    new = cipher.encrypt(pa.array(["c@x.io"]), EMAILS)
    assert key_versions(new).tolist() == [2]
    mixed = pa.concat_arrays([old, new])
    assert cipher.decrypt(mixed, EMAILS).to_pylist() == ["a@x.io", None, "b@x.io", "c@x.io"]
    rewrapped, changed = cipher.rewrap(mixed, EMAILS)
    assert changed == 2
    assert key_versions(rewrapped).tolist() == [2, -1, 2, 2]
    assert rewrapped.to_pylist()[3] == new.to_pylist()[0]  # current values untouched
    cipher.envelope.retire_below("customers", 2)
    with pytest.raises(KeyRetiredError):
        cipher.decrypt(old, EMAILS)
    assert cipher.decrypt(rewrapped, EMAILS).to_pylist() == ["a@x.io", None, "b@x.io", "c@x.io"]


def test_retired_versions_are_refused_and_can_be_purged(settings: CryptoSettings) -> None:
    cipher = settings.cipher()
    old = cipher.encrypt(pa.array(["x"]), EMAILS)
    cipher.envelope.rotate("customers")
    cipher.envelope.retire_below("customers", 2)
    assert settings.keyring().purge_retired("customers") == [1]
    fresh = settings.cipher()  # no cached key: the KEK file itself is gone
    with pytest.raises(KeyRetiredError):
        fresh.decrypt(old, EMAILS)
    with pytest.raises(InvalidInputError):
        cipher.envelope.retire_below("customers", 3)


def test_crypto_shredding_makes_a_dataset_unreadable(settings: CryptoSettings) -> None:
    cipher = settings.cipher()
    sealed = cipher.encrypt(pa.array(["ann@example.com", "bob@example.com"]), EMAILS)
    other = cipher.encrypt(pa.array(["kept"]), Binding("suppliers", "name"))
    cipher.envelope.destroy("customers")
    for reader in (cipher, settings.cipher()):  # this process and a fresh one
        with pytest.raises(KeyDestroyedError):
            reader.decrypt(sealed, EMAILS)
    assert not (settings.keyring_dir / "customers").exists()
    assert cipher.decrypt(other, Binding("suppliers", "name")).to_pylist() == ["kept"]
    # A new key of the same name does not bring the old data back.
    cipher.encrypt(pa.array(["new"]), EMAILS)
    with pytest.raises(DecryptionError):
        cipher.decrypt(sealed, EMAILS)


def test_a_wrapped_data_key_opens_only_for_its_name_and_version(
    settings: CryptoSettings,
) -> None:
    keyring = settings.keyring()
    keyring.create("a")
    keyring.create("b")
    wrapped = keyring.wrap("a", 1, b"k" * 32)
    assert keyring.unwrap("a", 1, wrapped) == b"k" * 32
    with pytest.raises(UnwrapError):
        keyring.unwrap("b", 1, wrapped)


def test_keyring_files_are_private_and_outside_the_home(settings: CryptoSettings) -> None:
    settings.cipher().encrypt(pa.array(["x"]), EMAILS)
    folder = settings.keyring_dir
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    kek = folder / "customers" / "v1.kek"
    assert stat.S_IMODE(kek.stat().st_mode) == 0o600 and len(kek.read_bytes()) == 32
    wrapped = settings.data_keys_dir / "customers.json"
    assert stat.S_IMODE(wrapped.stat().st_mode) == 0o600
    assert kek.read_bytes() not in wrapped.read_bytes()


def test_keyring_inside_the_home_or_open_to_others_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with pytest.raises(ConfigError, match="keyring_dir"):
        CryptoSettings.resolve(home=home, keyring_dir=home / "keys", environ={})
    env = {"DATAFLARE_KEYRING_DIR": str(home / "k")}
    with pytest.raises(ConfigError, match="keyring_dir"):
        CryptoSettings.resolve(home=home, environ=env)
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    with pytest.raises(ConfigError, match="0700"):
        CryptoSettings.resolve(home=home, keyring_dir=loose, environ={}).keyring()


def test_default_keyring_is_in_the_user_config_dir(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    settings = CryptoSettings.resolve(home=home, environ=env)
    assert settings.keyring_dir.parent.parent.parent == tmp_path / "xdg"
    assert settings.keyring_dir.name == "keyring"


def test_key_names_are_plain_identifiers(settings: CryptoSettings) -> None:
    for bad in ("../x", "a/b", "", "..", ".hidden"):
        with pytest.raises(InvalidInputError):
            settings.keyring().create(bad)


def _join(left: pl.DataFrame, right: pl.DataFrame) -> list[tuple]:
    return sorted(left.join(right, on="customer", how="inner").select("order", "name").rows())


def test_deterministic_join_stays_correct_across_a_rotation(cipher: ColumnCipher) -> None:
    """Orders and customers share the join domain ``customer``: equal ids give equal
    ciphertexts. After a rotation new rows carry version 2 and old ones version 1, so a
    join on raw ciphertexts would miss; ``align_to_latest`` (what rewrap does to stored
    data) re-encrypts the older deterministic values to the newest version first."""
    orders_key = Binding("shop", "orders.customer", domain="customer")
    customers_key = Binding("shop", "customers.id", domain="customer")
    customers = pl.DataFrame({"customer": ["c1", "c2", "c3"], "name": ["Ann", "Bob", "Cy"]})
    orders = pl.DataFrame({"customer": ["c1", "c3", "c3"], "order": [1, 2, 3]})
    expected = _join(orders, customers)

    enc_customers = customers.with_columns(
        pl.Series("customer", cipher.encrypt(customers["customer"], customers_key, True))
    )
    cipher.envelope.rotate("shop")
    enc_orders = orders.with_columns(
        pl.Series("customer", cipher.encrypt(orders["customer"], orders_key, True))
    )
    assert _join(enc_orders, enc_customers) == []  # the trap: versions differ
    left = align_to_latest(cipher, enc_orders, "customer", orders_key)
    right = align_to_latest(cipher, enc_customers, "customer", customers_key)
    assert _join(left, right) == expected


def test_a_lost_data_key_folder_is_an_error_not_a_new_key(tmp_path: Path) -> None:
    """Like a missing audit key: a name the keyring knows whose data key is gone (folder
    lost, or DATAFLARE_DATA_KEYS_DIR pointing elsewhere) is refused, never regenerated."""
    home = tmp_path / "home"
    home.mkdir()
    keys = tmp_path / "keys"
    first = CryptoSettings.resolve(home=home, keyring_dir=keys, environ={})
    sealed = first.cipher().encrypt(pa.array(["x"]), EMAILS)
    elsewhere = CryptoSettings.resolve(
        home=home, keyring_dir=keys, data_keys_dir=tmp_path / "other", environ={}
    )
    with pytest.raises(KeyDestroyedError, match="missing"):
        elsewhere.cipher().encrypt(pa.array(["y"]), EMAILS)
    assert not list((tmp_path / "other").glob("*.json"))  # no data key made there
    assert first.cipher().decrypt(sealed, EMAILS).to_pylist() == ["x"]


def test_rewrap_keeps_each_values_mode_and_position(cipher: ColumnCipher) -> None:
    from dataflare_platform.crypto.columns import FORMAT_GCM, FORMAT_SIV, parse_headers

    binding = Binding("mixed", "v")
    random = cipher.encrypt(pa.array(["r1", "r2"]), binding)
    det = cipher.encrypt(pa.array(["d1", "d2"]), binding, deterministic=True)
    mixed = pa.concat_arrays(
        [det.slice(0, 1), random, pa.nulls(1, pa.large_binary()), det.slice(1)]
    )
    cipher.envelope.rotate("mixed")
    current = cipher.encrypt(pa.array(["c"]), binding)
    column = pa.concat_arrays([mixed, current])
    rewrapped, changed = cipher.rewrap(column, binding)
    assert changed == 4
    assert cipher.decrypt(rewrapped, binding).to_pylist() == ["d1", "r1", "r2", None, "d2", "c"]
    heads = parse_headers(rewrapped)
    assert heads["format"].tolist() == [FORMAT_SIV, FORMAT_GCM, FORMAT_GCM, FORMAT_SIV, FORMAT_GCM]
    assert heads["version"].tolist() == [2] * 5
    again = cipher.encrypt(pa.array(["d1"]), binding, deterministic=True)
    assert rewrapped[0].as_py() == again[0].as_py()  # deterministic under the new version
