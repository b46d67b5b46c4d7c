"""The control token: generated once into the data dir (0600), or taken from the environment."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.api.auth import (
    MIN_TOKEN_LENGTH,
    TOKEN_ENV,
    TOKEN_FILE,
    TokenError,
    load_or_create_token,
)

ENV_TOKEN = "e" * MIN_TOKEN_LENGTH


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """A umask that hides nothing: the file's mode must come from the code, not the umask."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("permissive_umask")
def test_the_token_file_is_created_with_mode_0600_and_reused_on_the_next_start(
    tmp_path: Path,
) -> None:
    first = load_or_create_token(tmp_path, environ={})

    path = tmp_path / TOKEN_FILE
    assert first.source == "file"
    assert first.path == path
    assert first.where() == str(path)
    assert mode_of(path) == 0o600
    assert len(first.value) >= 32
    assert path.read_text(encoding="utf-8") == first.value + "\n"

    second = load_or_create_token(tmp_path, environ={})

    assert second.value == first.value
    assert second.source == "file"
    assert mode_of(path) == 0o600


def test_two_data_dirs_get_different_tokens(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()

    a = load_or_create_token(tmp_path / "a", environ={})
    b = load_or_create_token(tmp_path / "b", environ={})

    assert a.value != b.value


def test_the_environment_token_wins_over_the_file(tmp_path: Path) -> None:
    from_file = load_or_create_token(tmp_path, environ={})

    token = load_or_create_token(tmp_path, environ={TOKEN_ENV: ENV_TOKEN})

    assert token.value == ENV_TOKEN
    assert token.value != from_file.value
    assert token.source == "env"
    assert token.where() == f"${TOKEN_ENV}"
    assert token.matches(ENV_TOKEN)
    assert not token.matches(from_file.value)


def test_an_environment_token_creates_no_file(tmp_path: Path) -> None:
    load_or_create_token(tmp_path, environ={TOKEN_ENV: f"  {ENV_TOKEN}\n"})

    assert not (tmp_path / TOKEN_FILE).exists()


def test_a_blank_environment_token_falls_back_to_the_file(tmp_path: Path) -> None:
    token = load_or_create_token(tmp_path, environ={TOKEN_ENV: "   "})

    assert token.source == "file"
    assert (tmp_path / TOKEN_FILE).exists()


def test_a_too_short_environment_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenError) as caught:
        load_or_create_token(tmp_path, environ={TOKEN_ENV: "e" * (MIN_TOKEN_LENGTH - 1)})

    assert TOKEN_ENV in str(caught.value)
    assert str(MIN_TOKEN_LENGTH) in str(caught.value)
    assert not (tmp_path / TOKEN_FILE).exists()


def test_a_token_file_readable_by_others_is_tightened_to_0600(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / TOKEN_FILE
    path.write_text("f" * 40 + "\n", encoding="utf-8")
    path.chmod(0o644)

    with caplog.at_level(logging.WARNING, logger="coordinator.api.auth"):
        token = load_or_create_token(tmp_path, environ={})

    assert mode_of(path) == 0o600
    assert token.value == "f" * 40
    assert token.source == "file"
    assert any("644" in r.getMessage() and "0600" in r.getMessage() for r in caplog.records)


def test_a_token_file_without_a_usable_token_is_refused(tmp_path: Path) -> None:
    path = tmp_path / TOKEN_FILE
    path.write_text("short\n", encoding="utf-8")
    path.chmod(0o600)

    with pytest.raises(TokenError) as caught:
        load_or_create_token(tmp_path, environ={})

    assert str(path) in str(caught.value)


def test_matches_needs_the_exact_token(tmp_path: Path) -> None:
    token = load_or_create_token(tmp_path, environ={})

    assert token.matches(token.value)
    assert not token.matches(token.value + "x")
    assert not token.matches(token.value[:-1])
    assert not token.matches("")
