"""The no-op provider: the contract suite, plus its test controls."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from controlplane.domain import InsufficientCapacity, Throttled
from providers.base import BackendState, Provider
from providers.noop import NoopProvider
from tests.contract.provider_contract import TARGET, ProviderContract, launch_request


class TestNoopProviderContract(ProviderContract):
    def make_provider(self, tmp_path: Path) -> Provider:
        return NoopProvider(slots=4)


def test_fail_next_raises_once_then_launches() -> None:
    provider = NoopProvider()
    provider.fail_next(InsufficientCapacity("no g4dn.xlarge in us-east-1a"))
    with pytest.raises(InsufficientCapacity):
        provider.launch(launch_request("att-1"))
    assert provider.launched() == []
    assert not provider.launch(launch_request("att-1")).adopted
    assert provider.calls == [("launch", "att-1"), ("launch", "att-1")]


def test_fail_next_on_another_operation() -> None:
    provider = NoopProvider()
    provider.fail_next(Throttled("slow down"), operation="status")
    with pytest.raises(Throttled):
        provider.status("att-1")
    assert provider.status("att-1").state is BackendState.LOST
    with pytest.raises(ValueError, match="operation"):
        provider.fail_next(Throttled("x"), operation="explode")


def test_status_is_what_was_set_and_cancel_keeps_final_states() -> None:
    provider = NoopProvider()
    provider.launch(launch_request("att-1"))
    provider.set_status("att-1", BackendState.SUCCEEDED)
    provider.cancel("att-1")
    assert provider.status("att-1").state is BackendState.SUCCEEDED


def test_slot_limit_and_capacity() -> None:
    provider = NoopProvider(slots=1)
    provider.launch(launch_request("att-1"))
    assert provider.capacity(TARGET).free == 0
    with pytest.raises(InsufficientCapacity):
        provider.launch(launch_request("att-2"))
    provider.set_status("att-1", BackendState.PREEMPTED)
    assert provider.capacity(TARGET).free == 1
    assert NoopProvider().capacity(TARGET).total is None


def test_concurrent_launches_of_one_attempt_create_one_resource() -> None:
    provider = NoopProvider(record_calls=False)
    results = []
    barrier = threading.Barrier(8)

    def go() -> None:
        barrier.wait()
        results.append(provider.launch(launch_request("att-race")))

    threads = [threading.Thread(target=go) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(not r.adopted for r in results) == 1
    assert provider.launched() == ["att-race"]
