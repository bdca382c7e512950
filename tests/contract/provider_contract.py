"""One contract test suite that every provider must pass.

Subclass :class:`ProviderContract` in ``tests/contract/test_<provider>.py``
(the class name must start with ``Test``) and implement ``make_provider``;
pytest then runs every test below against that provider. Providers whose
``launch`` leaves a resource in ``PENDING`` or ``RUNNING`` for a while must
keep it alive long enough for the tests (a few seconds).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.domain import Candidate, Target
from controlplane.domain.worker_spec import parse_worker_spec
from providers.base import BackendState, LaunchRequest, Provider

TARGET = Target(name="contract", provider="local", private=True, settings={"slots": 2})


def worker_spec(attempt_id: str, task_id: str = "task-contract", **overrides: Any) -> dict[str, Any]:
    """A valid worker spec for ``attempt_id`` (the inputs need not exist unless the worker runs)."""
    spec: dict[str, Any] = {
        "version": 1,
        "task_id": task_id,
        "attempt_id": attempt_id,
        "source": "/nonexistent/source.png",
        "target": "/nonexistent/target.png",
        "output": "/nonexistent/out.png",
    }
    spec.update(overrides)
    return spec


#: the providers whose candidates carry a market (the planner sets it from the target's)
MARKET_PROVIDERS = ("aws", "azure")


def candidate_for(target: Target) -> Candidate:
    """The candidate a plan would make of ``target``: its first region and type, its max price and market."""
    return Candidate(
        target=target.name,
        provider=target.provider,
        private=target.private,
        region=target.regions[0] if target.regions else None,
        instance_type=target.instance_types[0] if target.instance_types else None,
        max_price_usd_h=target.max_price_usd_h,
        market=target.market if target.provider in MARKET_PROVIDERS else None,
    )


def launch_request(
    attempt_id: str, task_id: str = "task-contract", *, on: Target = TARGET, **spec_overrides: Any
) -> LaunchRequest:
    return LaunchRequest(
        attempt_id=attempt_id,
        task_id=task_id,
        candidate=candidate_for(on),
        worker_spec=parse_worker_spec(worker_spec(attempt_id, task_id, **spec_overrides)),
    )


class ProviderContract:
    """The behaviour every provider promises (see providers/base.py).

    ``target`` is the target the suite launches on; a provider's subclass sets
    its own (a kubernetes, aws or azure target with regions and types).
    """

    target: Target = TARGET

    def make_provider(self, tmp_path: Path) -> Provider:
        """A fresh provider whose launched attempts stay live until cancelled."""
        raise NotImplementedError

    def resources_of(self, provider: Provider, attempt_id: str) -> int:
        """How many backend resources exist for ``attempt_id`` (override to look at the backend itself)."""
        return sum(1 for owned in provider.list_owned() if owned.attempt_id == attempt_id)

    @pytest.fixture
    def provider(self, tmp_path: Path) -> Iterator[Provider]:
        provider = self.make_provider(tmp_path)
        yield provider
        for owned in provider.list_owned():
            provider.cancel(owned.attempt_id)

    def test_satisfies_the_protocol(self, provider: Provider) -> None:
        assert isinstance(provider, Provider)
        assert provider.name

    def test_launch_then_status_is_live(self, provider: Provider) -> None:
        result = provider.launch(launch_request("att-status", on=self.target))
        assert result.backend_ref
        assert not result.adopted
        assert provider.status("att-status").state in (BackendState.PENDING, BackendState.RUNNING)

    def test_launch_is_idempotent_on_the_attempt_id(self, provider: Provider) -> None:
        first = provider.launch(launch_request("att-twice", on=self.target))
        second = provider.launch(launch_request("att-twice", on=self.target))
        assert second.adopted
        assert second.backend_ref == first.backend_ref
        assert self.resources_of(provider, "att-twice") == 1, self.resources_of(provider, "att-twice")

    def test_list_owned_contains_the_launched_attempt(self, provider: Provider) -> None:
        provider.launch(launch_request("att-owned", task_id="task-owned", on=self.target))
        owned = {o.attempt_id: o for o in provider.list_owned()}
        assert "att-owned" in owned
        assert owned["att-owned"].task_id == "task-owned"
        assert owned["att-owned"].backend_ref

    def test_cancel_then_status_is_final(self, provider: Provider) -> None:
        provider.launch(launch_request("att-cancel", on=self.target))
        provider.cancel("att-cancel")
        assert provider.status("att-cancel").state.is_final
        provider.cancel("att-cancel")  # idempotent
        assert provider.status("att-cancel").state.is_final

    def test_cancel_of_an_unknown_attempt_is_success(self, provider: Provider) -> None:
        provider.cancel("att-never-launched")
        provider.cancel("att-never-launched")

    def test_status_of_an_unknown_attempt_is_lost(self, provider: Provider) -> None:
        status = provider.status("att-never-launched")
        assert status.state is BackendState.LOST
        assert status.reason
        assert "unknown attempt" in status.reason

    def test_capacity_reports_numbers(self, provider: Provider) -> None:
        capacity = provider.capacity(self.target)
        for value in (capacity.free, capacity.total):
            assert value is None or (isinstance(value, int) and value >= 0)
        if capacity.free is not None and capacity.total is not None:
            assert capacity.free <= capacity.total

    def test_quote_answers(self, provider: Provider) -> None:
        quote = provider.quote(candidate_for(self.target))
        assert quote.usd_per_hour is None or quote.usd_per_hour >= 0
