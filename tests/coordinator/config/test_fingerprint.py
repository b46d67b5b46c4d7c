"""Fingerprints: a bot's effective config hashes the same until something it trades on changes."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from coordinator import __version__
from coordinator.config import CONFIG_FILES, load_config
from coordinator.config.fingerprint import (
    bot_fingerprints,
    canonical_json,
    code_version,
    decimal_text,
    existing_file_hashes,
    file_hashes,
    source_sha256,
)
from tests.coordinator.config.support import Edit


def hashes(config_dir: Path) -> dict[str, str]:
    return {bot: f.sha256 for bot, f in bot_fingerprints(load_config(config_dir)).items()}


def test_the_same_config_hashes_the_same_however_the_files_are_laid_out(
    config_dir: Path, edit: Edit
) -> None:
    before = hashes(config_dir)

    def reordered(document: dict[str, Any]) -> dict[str, Any]:
        return dict(reversed(list(document.items())))

    for name in CONFIG_FILES:
        edit(name, reordered)
    (config_dir / "bots.json").write_text(
        json.dumps(json.loads((config_dir / "bots.json").read_text()), separators=(",", ":"))
    )

    assert hashes(config_dir) == before
    assert len(set(before.values())) == len(before)  # one hash per bot, not one for all


def test_a_default_limit_change_changes_every_bot_and_an_override_only_its_bot(
    config_dir: Path, edit: Edit
) -> None:
    before = hashes(config_dir)

    edit("bot-limits.json", lambda d: d["bots"].update(kraken={"max_open_orders": 3}))
    overridden = hashes(config_dir)
    edit("bot-limits.json", lambda d: d["defaults"].update(max_daily_loss=999))
    defaults_changed = hashes(config_dir)

    assert overridden["kraken"] != before["kraken"]
    assert overridden["ndax"] == before["ndax"]
    assert all(defaults_changed[bot] != overridden[bot] for bot in before)


def test_a_safe_mode_factor_and_a_strategy_parameter_are_part_of_the_effective_config(
    config_dir: Path, edit: Edit
) -> None:
    before = hashes(config_dir)

    edit("bot-limits.json", lambda d: d["safe_mode"].update(size_factor=0.2))
    safe_mode = hashes(config_dir)
    edit("bots.json", lambda d: d["bots"][0]["strategy"]["params"].update(quote_amount=26))
    strategy = hashes(config_dir)

    assert all(safe_mode[bot] != before[bot] for bot in before)
    assert strategy["ndax"] != safe_mode["ndax"]
    assert strategy["kraken"] == safe_mode["kraken"]


def test_a_file_outside_the_effective_config_does_not_move_a_bot_hash(
    config_dir: Path, edit: Edit
) -> None:
    before = hashes(config_dir)

    edit("alerts.json", lambda d: d.update(version=d["version"]))  # rewritten, same content
    edit("kill-switch.json", lambda d: d["activation_limit"].update(window_minutes=61))

    assert hashes(config_dir) == before


@pytest.mark.parametrize("written", ["250", "250.0", "250.000", "2.5E+2"])
def test_a_limit_hashes_the_same_however_its_number_is_written(
    config_dir: Path, written: str
) -> None:
    path = config_dir / "bot-limits.json"
    text = path.read_text()
    assert '"ndax": {"max_order_notional": 250}' in text
    before = hashes(config_dir)

    limit = '"max_order_notional": 250}'
    path.write_text(text.replace(limit, limit.replace("250", written)))

    assert hashes(config_dir) == before


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("100"), "100"),
        (Decimal("100.00"), "100"),
        (Decimal("1E+2"), "100"),
        (Decimal("0.0010"), "0.001"),
        (Decimal("-0.0"), "0"),
        (Decimal("-1.50"), "-1.5"),
        (Decimal("0.00000001"), "0.00000001"),
    ],
)
def test_a_decimal_has_one_canonical_text(value: Decimal, text: str) -> None:
    assert decimal_text(value) == text


def test_canonical_json_sorts_keys_has_no_whitespace_and_writes_decimals_as_strings() -> None:
    document = {"b": Decimal("1.50"), "a": [1, (2, 3)], "c": {"z": None, "y": True}}

    assert canonical_json(document) == '{"a":[1,[2,3]],"b":"1.5","c":{"y":true,"z":null}}'


def test_canonical_json_refuses_a_value_it_has_no_canonical_form_for() -> None:
    with pytest.raises(TypeError, match="set"):
        canonical_json({"a": {1, 2}})


def test_the_effective_config_shows_the_merged_limits_and_the_bot(config_dir: Path) -> None:
    fingerprint = bot_fingerprints(load_config(config_dir))["ndax"]
    effective = json.loads(fingerprint.config_json)

    assert effective["bot"]["name"] == "ndax"
    assert effective["limits"]["max_order_notional"] == "250"  # ndax's override
    assert effective["limits"]["max_open_orders"] == 10  # the default
    assert effective["safe_mode"] == {"max_open_orders": 1, "size_factor": "0.1"}
    assert fingerprint.pretty().startswith('{\n  "bot": {')


def test_the_code_version_is_the_version_and_a_hash_of_the_source() -> None:
    version = code_version()

    assert version.version == __version__
    assert len(version.source_sha256) == 64
    assert version.label == f"{__version__}+{version.source_sha256[:16]}"
    assert code_version() is version  # once per process


def test_the_source_hash_moves_with_any_source_file_and_ignores_caches(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "__pycache__").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    before = source_sha256((package,))

    (package / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\1")
    unchanged = source_sha256((package,))
    (package / "a.py").write_text("x = 2\n")
    edited = source_sha256((package,))
    (package / "a.py").rename(package / "b.py")
    renamed = source_sha256((package,))

    assert unchanged == before
    assert len({before, edited, renamed}) == 3


def test_file_hashes_name_each_config_file_and_none_for_one_that_is_gone(
    config_dir: Path,
) -> None:
    (config_dir / "alerts.json").unlink()

    found = file_hashes(config_dir)

    assert list(found) == list(CONFIG_FILES)
    assert found["alerts.json"] is None
    assert "alerts.json" not in existing_file_hashes(config_dir)
    assert all(len(sha) == 64 for sha in existing_file_hashes(config_dir).values())
