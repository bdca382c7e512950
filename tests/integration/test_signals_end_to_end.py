"""Signals from poll to receipt: the hub polls real sources (Azure prices fake, the store's queue), the
scheduler plans on one snapshot, the receipt records values and ages, and `GET /v1/signals` /
`fusionctl signals` show them; a source going down leaves the last value to age into stale."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine

from controlplane.api.app import create_app
from controlplane.cli.signals import signals as signals_cli
from controlplane.config import Settings
from controlplane.domain import (
    SPOT_PRICE_TTL_SECONDS,
    DataSensitivity,
    SignalSample,
    SignalSnapshot,
    TaskKind,
    TaskSpec,
)
from controlplane.metrics import Metrics
from controlplane.policy import parse_policy
from controlplane.policy_sources import ActivePolicy, PolicySet
from controlplane.runtime import standalone_scheduler
from controlplane.runtime.signals import build_signal_hub, pollers_json
from controlplane.signals.azure_spot import AzureSpotPriceSource
from controlplane.store import Store, upgrade
from providers.noop import NoopProvider
from tests.fakes.azure_prices import T4_4, FakeAzurePrices
from tests.support.api_fixtures import OPERATOR, registry
from tests.support.asgi_server import serving

pytestmark = pytest.mark.timeout(60)

POLICY_DOCUMENT = {
    "targets": [
        {"name": "onprem", "provider": "local", "private": True},
        {
            "name": "azure",
            "provider": "azure",
            "storage": {"uri": "az://fpwork/work/"},
            "private": False,
            "regions": ["eastus"],
            "instance_types": [T4_4],
            "max_price_usd_h": 0.5,
        },
    ],
    "rules": [{"name": "cloud-first", "match": {"data_sensitivity": "public"}, "targets": ["azure", "onprem"]}],
}
POLICY = parse_policy(POLICY_DOCUMENT)
EASTUS_T4 = 0.1578  # the fake's Spot Linux price for that size


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    yield Store(engine)
    engine.dispose()


@pytest.fixture
def prices() -> Iterator[FakeAzurePrices]:
    fake = FakeAzurePrices().start()
    yield fake
    fake.stop()


def submit(store: Store, sensitivity: DataSensitivity) -> str:
    task, _ = store.create_task(
        spec=TaskSpec(
            tenant="acme",
            kind=TaskKind.IMAGE,
            source_uri="https://img.example/in/f.png",
            target_uri="https://img.example/in/t.png",
            output_uri=f"/var/fp/outputs/out/{sensitivity}.png",
            data_sensitivity=sensitivity,
        ),
        request_hash=str(sensitivity),
    )
    return task.id


def test_poll_plan_receipt_and_the_signals_view(store: Store, prices: FakeAzurePrices, tmp_path: Path) -> None:
    metrics = Metrics.create()
    hub = build_signal_hub(
        store=store,
        policy=lambda: POLICY,
        metrics=metrics,
        sources=[AzureSpotPriceSource(base_url=prices.url)],
    )
    public, private = submit(store, DataSensitivity.PUBLIC), submit(store, DataSensitivity.PRIVATE)
    hub.poll_all(force=True)
    snapshot = hub.snapshot()
    assert snapshot.get("spot_price", f"azure/eastus/{T4_4}").value == EASTUS_T4  # type: ignore[union-attr]
    assert snapshot.get("queue", "depth").value == 2  # type: ignore[union-attr]

    scheduler = standalone_scheduler(
        store=store,
        policy=lambda: POLICY,
        providers={"local": NoopProvider(name="local"), "azure": NoopProvider(name="azure")},
        scheduler_id="test",
        signals=hub.samples,
    )
    assert scheduler.place_batch() == 2
    receipt = store.get_decisions(public)[-1]
    assert receipt.candidates[0].target == "azure"
    assert receipt.candidates[0].expected_usd_h == EASTUS_T4
    used = receipt.signals_used[f"spot_price/azure/eastus/{T4_4}"]
    assert used["value"] == EASTUS_T4
    assert used["stale"] is False
    assert used["age_seconds"] >= 0
    assert [c.target for c in store.get_decisions(private)[-1].candidates] == ["onprem"]
    history = store.signal_history(source="spot_price")
    assert [(key, value) for _s, key, value, _at in history] == [(f"azure/eastus/{T4_4}", EASTUS_T4)]

    settings = Settings(var_dir=tmp_path / "var", input_roots=(tmp_path,), output_root=tmp_path / "out")
    asgi, _app = create_app(
        settings=settings,
        store=store,
        tokens=registry(),
        metrics=metrics,
        live_signals=lambda: scheduler.snapshot(POLICY),
        signal_pollers=lambda: pollers_json(hub),
    )
    with serving(asgi) as url:
        headers = {"Authorization": f"Bearer {OPERATOR}"}
        body = httpx.get(f"{url}/v1/signals", headers=headers, timeout=10).json()
        rows = {row["name"]: row for row in body["signals"]}
        assert rows[f"spot_price/azure/eastus/{T4_4}"]["status"] == "fresh"
        assert rows["queue/depth"]["value"] == 2
        assert {p["source"] for p in body["pollers"]} == {"queue", "breaker", "budget", "spot_history", "azure_spot"}
        scraped = httpx.get(f"{url}/metrics", headers=headers, timeout=10).text
        assert f'fusionplane_signal_age_seconds{{key="azure/eastus/{T4_4}",source="spot_price"}}' in scraped

        prices.stop()  # the price API goes away: the last price stays and ages
        hub.poll("azure_spot", force=True)
        [azure] = [p for p in pollers_json(hub) if p["source"] == "azure_spot"]
        assert azure["failures_in_a_row"] == 1
        assert "AzureSpotPricesUnavailable" in azure["last_error"]
        assert metrics.registry.get_sample_value("fusionplane_signal_poll_errors_total", {"source": "azure_spot"})

        runner = CliRunner()
        shown = runner.invoke(signals_cli, ["--url", url, "--token", OPERATOR])
        assert shown.exit_code == 0, shown.output
        assert f"azure/eastus/{T4_4}" in shown.output
        assert "0.1578 $/h" in shown.output
        assert "azure_spot" in shown.output
        assert "AzureSpotPricesUnavailable" in shown.output
        listed = runner.invoke(
            signals_cli, ["history", "--url", url, "--token", OPERATOR, "--source", "spot_price", "-o", "json"]
        )
        assert listed.exit_code == 0, listed.output
        assert json.loads(listed.output)[0]["value"] == EASTUS_T4
    hub.close()


def test_a_price_older_than_the_policy_ttl_never_chooses_the_cloud(store: Store, prices: FakeAzurePrices) -> None:
    now = [datetime(2026, 11, 24, 12, 0, tzinfo=UTC)]
    hub = build_signal_hub(store=store, policy=lambda: POLICY, sources=[AzureSpotPriceSource(base_url=prices.url)])
    hub._clock = lambda: now[0]
    hub.poll_all(force=True)
    task_id = submit(store, DataSensitivity.PUBLIC)
    scheduler = standalone_scheduler(
        store=store,
        policy=lambda: POLICY,
        providers={"local": NoopProvider(name="local"), "azure": NoopProvider(name="azure")},
        scheduler_id="test",
        signals=hub.samples,
        clock=lambda: now[0] + timedelta(seconds=SPOT_PRICE_TTL_SECONDS["azure"] + 1),
    )
    scheduler.place_batch()
    hub.close()
    receipt = store.get_decisions(task_id)[-1]
    assert [c.target for c in receipt.candidates] == ["onprem"]
    assert [(r.target, r.code) for r in receipt.rejections] == [("azure", "stale_price")]


@pytest.mark.parametrize(
    ("thresholds", "fresh", "ttl"),
    [
        # the defaults: the price's own TTL (an hour) outlives the poll interval (30 minutes)
        ({}, True, SPOT_PRICE_TTL_SECONDS["azure"]),
        # an operator's cap cuts it shorter, and the signals view says so too
        ({"price_ttl_seconds": 600}, False, 600),
    ],
)
def test_an_azure_price_polled_20_minutes_ago_is_judged_alike_by_plan_and_signals(
    store: Store, prices: FakeAzurePrices, tmp_path: Path, thresholds: dict[str, float], fresh: bool, ttl: float
) -> None:
    policy = parse_policy({**POLICY_DOCUMENT, "thresholds": thresholds})
    polled = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    later = polled + timedelta(minutes=20)
    hub = build_signal_hub(store=store, policy=lambda: policy, sources=[AzureSpotPriceSource(base_url=prices.url)])
    hub._clock = lambda: polled
    hub.poll_all(force=True)
    task_id = submit(store, DataSensitivity.PUBLIC)
    scheduler = standalone_scheduler(
        store=store,
        policy=lambda: policy,
        providers={"local": NoopProvider(name="local"), "azure": NoopProvider(name="azure")},
        scheduler_id="test",
        signals=hub.samples,
        clock=lambda: later,
    )
    scheduler.place_batch()
    hub.close()
    receipt = store.get_decisions(task_id)[-1]
    name = f"spot_price/azure/eastus/{T4_4}"
    # plan() (and so `fusionctl explain`, which shows the receipt)
    assert (receipt.signals_used[name]["stale"], receipt.signals_used[name]["ttl_seconds"]) == (not fresh, ttl)
    assert receipt.candidates[0].target == ("azure" if fresh else "onprem")
    # `fusionctl signals`, through the real API with the same policy in force
    settings = Settings(var_dir=tmp_path / "var", input_roots=(tmp_path,), output_root=tmp_path / "out")
    asgi, _app = create_app(
        settings=settings,
        store=store,
        tokens=registry(),
        metrics=Metrics.create(),
        live_signals=lambda: scheduler.snapshot(policy),
        active_policy=ActivePolicy(PolicySet(base=policy), applied_at=later),
    )
    with serving(asgi) as url:
        shown = CliRunner().invoke(signals_cli, ["--url", url, "--token", OPERATOR, "-o", "json"])
    assert shown.exit_code == 0, shown.output
    row = {r["name"]: r for r in json.loads(shown.output)["signals"]}[name]
    assert (row["status"], row["ttl_seconds"], round(row["age_seconds"])) == (
        "fresh" if fresh else "stale",
        ttl,
        1200,
    )


def test_the_local_targets_capacity_is_shown_as_local_slots_not_free_gpus(tmp_path: Path) -> None:
    """The local provider counts worker slots on this machine (which may have no GPU), not free GPUs."""
    document = {
        **POLICY_DOCUMENT,
        "targets": [*POLICY_DOCUMENT["targets"], {"name": "k8s", "provider": "kubernetes", "private": True}],
    }
    policy = parse_policy(document)
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    snapshot = SignalSnapshot(
        taken_at=now,
        samples={
            f"free_gpus/{name}": SignalSample(
                source="free_gpus", key=name, value=value, observed_at=now, ttl_seconds=60
            )
            for name, value in (("onprem", 2), ("k8s", 3))
        },
    )
    settings = Settings(var_dir=tmp_path / "var", input_roots=(tmp_path,), output_root=tmp_path / "out")
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    asgi, _app = create_app(
        settings=settings,
        store=Store(engine),
        tokens=registry(),
        metrics=Metrics.create(),
        live_signals=lambda: snapshot,
        active_policy=ActivePolicy(PolicySet(base=policy), applied_at=now),
    )
    with serving(asgi) as url:
        as_json = CliRunner().invoke(signals_cli, ["--url", url, "--token", OPERATOR, "-o", "json"])
        table = CliRunner().invoke(signals_cli, ["--url", url, "--token", OPERATOR])
    engine.dispose()
    rows = {r["name"]: r for r in json.loads(as_json.output)["signals"]}
    assert (rows["free_gpus/onprem"]["unit"], rows["free_gpus/k8s"]["unit"]) == ("local_slots", "gpus")
    lines = {line.split()[1]: line for line in table.output.splitlines() if line.startswith("free_gpus")}
    assert "2 local slots" in lines["onprem"]
    assert "3 GPUs" in lines["k8s"]
