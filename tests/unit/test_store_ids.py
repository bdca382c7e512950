"""Store ids: prefix + 26 Crockford base32 characters, strictly increasing within a process, not guessable."""

from __future__ import annotations

import itertools
import re

import pytest

from controlplane.store import ids as ids_module
from controlplane.store.ids import new_id

ID = re.compile(r"^tsk_[0-9A-HJKMNP-TV-Z]{26}$")


def test_ids_are_well_formed_and_strictly_increasing() -> None:
    ids = [new_id("tsk") for _ in range(5000)]
    assert all(ID.match(i) for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_time_orders_ids_and_a_clock_step_back_does_not_break_the_order(monkeypatch: pytest.MonkeyPatch) -> None:
    # the generator remembers the last millisecond process-wide: restore it after this test
    monkeypatch.setattr(ids_module, "_last_ms", -1)
    monkeypatch.setattr(ids_module, "_last_random", 0)
    later = new_id("tsk", now_ms=4_000_000_000_000)
    earlier_clock = new_id("tsk", now_ms=1_000)
    assert earlier_clock > later
    # the first 10 characters encode the milliseconds
    assert later[4:14] == new_id("tsk", now_ms=4_000_000_000_000)[4:14]


def _random_part(an_id: str) -> int:
    value = 0
    for char in an_id.split("_", 1)[1]:
        value = value * 32 + ids_module._ALPHABET.index(char)
    return value & ((1 << 80) - 1)


def test_ids_inside_one_millisecond_are_not_neighbours(monkeypatch: pytest.MonkeyPatch) -> None:
    # one frozen millisecond: a plain ULID would hand out n, n+1, n+2, ...
    monkeypatch.setattr(ids_module, "_last_ms", -1)
    monkeypatch.setattr(ids_module, "_last_random", 0)
    ids = [new_id("tsk", now_ms=1_700_000_000_000) for _ in range(2000)]
    assert {i[4:14] for i in ids} == {ids[0][4:14]}  # all in that millisecond
    assert ids == sorted(ids)
    steps = [_random_part(b) - _random_part(a) for a, b in itertools.pairwise(ids)]
    # each step is drawn from 2**64 values: a guesser counting up from its own id finds nothing
    assert min(steps) > 1 << 32
    assert len(set(steps)) == len(steps)
