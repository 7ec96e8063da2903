"""The generated hostile specs (tests/chaos/specs.py): drawn the same for a seed, kept in a cache keyed by
what they depend on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.chaos import specs


def test_the_same_seed_draws_the_same_cases_and_the_cache_returns_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn = specs.generate(8, 3, cache=tmp_path / "a")
    assert len(drawn) == 8
    assert specs.generate(8, 3, cache=tmp_path / "b") == drawn  # drawn again, not read
    (stored,) = (tmp_path / "a").glob("*.json")
    assert json.loads(stored.read_text()) == drawn

    def never(count: int, seed_value: int) -> list[object]:
        raise AssertionError("drawn again although the cache holds these cases")

    monkeypatch.setattr(specs, "_draw", never)
    assert specs.generate(8, 3, cache=tmp_path / "a") == drawn


def test_another_count_or_seed_is_another_entry(tmp_path: Path) -> None:
    specs.generate(5, 3, cache=tmp_path)
    specs.generate(6, 3, cache=tmp_path)
    specs.generate(5, 4, cache=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 3


def test_a_damaged_entry_is_drawn_again(tmp_path: Path) -> None:
    drawn = specs.generate(5, 3, cache=tmp_path)
    (stored,) = tmp_path.glob("*.json")
    stored.write_text('[{"model": ')
    assert specs.generate(5, 3, cache=tmp_path) == drawn
    assert json.loads(stored.read_text()) == drawn
