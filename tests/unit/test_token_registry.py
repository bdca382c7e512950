"""The token registry follows its file: when it looks, what counts as a change, what it keeps."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from controlplane.api.auth import TokenRegistry, create_token, hash_token
from controlplane.api.tokens_file import list_tokens, revoke_token
from controlplane.metrics import Metrics
from tests.support.together import together


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entry(token: str, *, tenant: str = "acme", role: str = "submitter", name: str = "") -> dict[str, str]:
    return {"name": name or token, "tenant": tenant, "role": role, "sha256": hash_token(token)}


def write(path: Path, *tokens: str) -> None:
    path.write_text(json.dumps({"tokens": [entry(t) for t in tokens]}), encoding="utf-8")


def invalid_reloads(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("fusionplane_tokens_reloads_total", {"outcome": "invalid"})


def test_a_change_is_seen_at_the_next_check_and_not_before(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    write(path, "fp_old")
    clock = Clock()
    registry = TokenRegistry.load(path, clock=clock, check_every_s=1.0)
    write(path, "fp_new")
    for _ in range(1000):  # the hot path: no look at the file inside the interval
        assert registry.authenticate("fp_old") is not None
    clock.now += 1.0
    assert registry.authenticate("fp_old") is None
    assert registry.authenticate("fp_new") is not None


def test_a_file_replaced_by_a_symlink_swap_is_seen_with_the_same_size_and_mtime(tmp_path: Path) -> None:
    """A Kubernetes Secret volume: ``tokens.json -> ..data/tokens.json``, ``..data`` swapped to a new folder."""
    volume = tmp_path / "secret"
    first, second = volume / "..2026_12_04_a", volume / "..2026_12_04_b"
    first.mkdir(parents=True)
    second.mkdir()
    write(first / "tokens.json", "fp_aaaa")
    write(second / "tokens.json", "fp_bbbb")  # same length: the same size
    stamp = (first / "tokens.json").stat().st_mtime_ns
    os.utime(second / "tokens.json", ns=(stamp, stamp))
    (volume / "..data").symlink_to(first.name)
    (volume / "tokens.json").symlink_to("..data/tokens.json")
    clock = Clock()
    registry = TokenRegistry.load(volume / "tokens.json", clock=clock)
    assert registry.authenticate("fp_aaaa") is not None

    (volume / "..data_tmp").symlink_to(second.name)
    os.replace(volume / "..data_tmp", volume / "..data")  # what the kubelet does
    clock.now += 1.0
    assert registry.authenticate("fp_aaaa") is None
    assert registry.authenticate("fp_bbbb") is not None


def test_an_unreadable_file_keeps_the_last_good_set_logged_and_counted_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.json"
    write(path, "fp_good")
    clock, metrics = Clock(), Metrics.create()
    registry = TokenRegistry.load(path, clock=clock, metrics=metrics)
    path.write_text('{"tokens": [', encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="fusionplane.auth"):
        for _ in range(3):  # three check intervals, one bad version
            clock.now += 1.0
            assert registry.authenticate("fp_good") is not None
    assert [r.__dict__.get("event") for r in caplog.records] == ["tokens.rejected"]
    assert "fp_good" not in caplog.text
    assert invalid_reloads(metrics) == 1.0

    write(path, "fp_good", "fp_fixed")  # fixed: applied at the next check
    clock.now += 1.0
    assert registry.authenticate("fp_fixed") is not None
    assert metrics.registry.get_sample_value("fusionplane_tokens_loaded") == 2.0


def test_a_file_with_one_bad_entry_is_not_applied(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    write(path, "fp_good")
    clock = Clock()
    registry = TokenRegistry.load(path, clock=clock)
    document = {"tokens": [entry("fp_good"), entry("fp_sneaky", tenant="acme/../globex", role="admin")]}
    path.write_text(json.dumps(document), encoding="utf-8")
    clock.now += 1.0
    assert registry.authenticate("fp_sneaky") is None
    assert registry.authenticate("fp_good") is not None


def test_a_removed_file_means_no_token_works(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    write(path, "fp_good")
    clock = Clock()
    registry = TokenRegistry.load(path, clock=clock)
    path.unlink()
    clock.now += 1.0
    assert registry.authenticate("fp_good") is None
    assert len(registry) == 0


def test_a_registry_built_from_entries_never_reads_a_file(tmp_path: Path) -> None:
    clock = Clock()
    registry = TokenRegistry([entry("fp_fixed")], clock=clock)
    clock.now += 10.0
    assert registry.authenticate("fp_fixed") is not None
    assert registry.reload_if_changed() is False


def test_concurrent_creates_and_revokes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    for i in range(8):
        create_token(path, tenant="acme", role="submitter", name=f"old-{i}")

    def creates(worker: int) -> None:
        for i in range(6):
            create_token(path, tenant="acme", role="submitter", name=f"new-{worker}-{i}")

    def revokes(worker: int) -> None:
        for i in range(worker, 8, 2):
            revoke_token(path, name_or_id=f"old-{i}")

    together(*(lambda w=w: creates(w) for w in range(4)), *(lambda w=w: revokes(w) for w in range(2)))
    names = sorted(e.name for e in list_tokens(path))
    assert names == sorted(f"new-{w}-{i}" for w in range(4) for i in range(6))
    assert len(TokenRegistry.load(path)) == 24


def test_revoke_and_create_leave_the_file_0600(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    create_token(path, tenant="acme", role="submitter", name="a")
    create_token(path, tenant="acme", role="submitter", name="b")
    revoke_token(path, name_or_id="a")
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tokens.json.lock").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.json", "tokens.json.lock"]  # no temp left


def test_a_token_created_a_moment_ago_works_on_its_first_use(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    create_token(path, tenant="acme", role="submitter", name="first")
    clock = Clock()
    registry = TokenRegistry.load(path, clock=clock, check_every_s=3600.0)
    fresh = create_token(path, tenant="acme", role="operator", name="new-operator")
    found = registry.authenticate(fresh)  # no restart, and no wait for the next timed check
    assert found is not None
    assert found.role == "operator"
    revoke_token(path, name_or_id="new-operator")
    assert registry.authenticate(fresh) is not None  # a revocation waits for the timed check
    clock.now += 3600.0
    assert registry.authenticate(fresh) is None
