"""`bot-coordinator reconcile` arguments: a wrong one is named, and nothing is opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from coordinator.cli import main
from tests.support_config import write_fast_config


def test_an_unknown_bot_is_a_bad_argument_named_with_the_bots_there_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_fast_config(tmp_path / "config")
    data = tmp_path / "data"
    data.mkdir()
    sqlite3.connect(data / "coordinator.db").close()  # a journal file is there
    before = (data / "coordinator.db").read_bytes()

    code = main(
        [
            "--config-dir",
            str(config),
            "--data-dir",
            str(data),
            "--log-dir",
            str(tmp_path / "logs"),
            "reconcile",
            "--bot",
            "nope",
        ]
    )

    assert code == 2
    assert "--bot: no bot named 'nope'; bots: ndax, kraken" in capsys.readouterr().err
    assert (data / "coordinator.db").read_bytes() == before, "the journal was not opened"
