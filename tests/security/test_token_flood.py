"""Wrong bearer tokens may make the registry look at its file, but never read it again for nothing.

An unknown token triggers one ``stat`` so that a token created a moment ago
works at once; a stream of unknown tokens must not turn into a read of the
tokens file per request, neither for an unchanged file nor for a bad version
already rejected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controlplane.api import auth
from controlplane.api.auth import TokenRegistry, create_token


class Reads:
    """How often the registry read the tokens file."""

    def __init__(self) -> None:
        self.count = 0


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Reads:
    counter = Reads()
    real = auth.read_tokens

    def counted(path: Path) -> list[dict[str, Any]]:
        counter.count += 1
        return real(path)

    monkeypatch.setattr(auth, "read_tokens", counted)
    return counter


def test_a_flood_of_unknown_tokens_reads_an_unchanged_file_not_once(tmp_path: Path, reads: Reads) -> None:
    path = tmp_path / "tokens.json"
    good = create_token(path, tenant="acme", role="submitter", name="good")
    registry = TokenRegistry.load(path, check_every_s=3600.0)
    reads.count = 0
    for n in range(2000):
        assert registry.authenticate(f"fp_guess_{n}") is None
    assert reads.count == 0
    assert registry.authenticate(good) is not None


def test_a_rejected_version_is_not_read_again_for_each_unknown_token(tmp_path: Path, reads: Reads) -> None:
    path = tmp_path / "tokens.json"
    good = create_token(path, tenant="acme", role="submitter", name="good")
    registry = TokenRegistry.load(path, check_every_s=3600.0)
    path.write_text(json.dumps({"tokens": [{"name": "x", "tenant": "../etc", "role": "admin"}]}), encoding="utf-8")
    reads.count = 0
    for n in range(500):
        assert registry.authenticate(f"fp_guess_{n}") is None
    assert reads.count == 1  # read once, rejected, then left alone
    assert registry.authenticate(good) is not None  # the last good set stays in force
