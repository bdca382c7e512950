"""Signal history in the store (both databases) and the runtime's settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controlplane.domain import SignalSample
from controlplane.runtime.signals import DEFAULT_SCHEDULES, build_sources, schedule_for
from controlplane.store import Store

# fixtures: a session PostgreSQL and `store` on both databases
pytest_plugins = ["tests.integration.store_fixtures"]

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def sample(key: str, value: float, minutes: int) -> SignalSample:
    return SignalSample(
        source="spot_price", key=key, value=value, observed_at=T0 + timedelta(minutes=minutes), ttl_seconds=600
    )


def test_history_filters_orders_and_prunes_in_batches(store: Store) -> None:
    written = store.record_signal_samples(
        [sample("aws/us-east-1/g5.xlarge", 0.40 + i / 100, i) for i in range(25)]
        + [sample("azure/eastus/nc4", 0.15, 3), sample("azure/eastus/nc4", float("nan"), 4)]
    )
    assert written == 26  # NaN never reaches the history
    newest = store.signal_history(key="aws/us-east-1/g5.xlarge", limit=3)
    assert [round(v, 2) for _s, _k, v, _at in newest] == [0.64, 0.63, 0.62]
    assert newest[0][3] == T0 + timedelta(minutes=24)
    recent = store.signal_history(source="spot_price", since=T0 + timedelta(minutes=20))
    assert len(recent) == 5
    assert store.prune_signal_samples(older_than=T0 + timedelta(minutes=10), batch=4) == 11
    left = store.signal_history(limit=100)
    assert len(left) == 15
    assert min(at for *_rest, at in left) == T0 + timedelta(minutes=10)


def test_schedules_come_from_defaults_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert schedule_for("aws_spot") == DEFAULT_SCHEDULES["aws_spot"]
    monkeypatch.setenv("FUSIONPLANE_SIGNALS_AWS_SPOT_INTERVAL_S", "120")
    monkeypatch.setenv("FUSIONPLANE_SIGNALS_AWS_SPOT_JITTER_S", "0")
    chosen = schedule_for("aws_spot")
    assert (chosen.interval_s, chosen.jitter_s, chosen.timeout_s) == (120, 0, DEFAULT_SCHEDULES["aws_spot"].timeout_s)
    monkeypatch.setenv("FUSIONPLANE_SIGNALS_QUEUE_TIMEOUT_S", "soon")
    with pytest.raises(ValueError, match="FUSIONPLANE_SIGNALS_QUEUE_TIMEOUT_S"):
        schedule_for("queue")
    monkeypatch.setenv("FUSIONPLANE_SIGNALS_QUEUE_TIMEOUT_S", "0")
    with pytest.raises(ValueError, match="above 0"):
        schedule_for("queue")


def test_prometheus_runs_only_when_configured() -> None:
    without = build_sources({})
    with_url = build_sources({"FUSIONPLANE_PROMETHEUS_URL": "http://127.0.0.1:9"})
    try:
        prices = ["aws_on_demand", "aws_spot", "azure_on_demand", "azure_spot"]
        assert sorted(s.name for s in without) == [*prices, "kubernetes"]
        assert sorted(s.name for s in with_url) == [*prices, "kubernetes", "prometheus"]
    finally:
        for source in [*without, *with_url]:
            getattr(source, "close", lambda: None)()
