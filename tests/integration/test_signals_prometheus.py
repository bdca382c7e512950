"""PrometheusSource against a real Prometheus scraping a DCGM-style exporter whose values the test sets.

The exporter's values never change, so every average over the window is the
value itself and each expected number is known exactly. Slow, silent and
garbage backends are small servers on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prometheus_client import CollectorRegistry, Gauge

from controlplane.domain import Target
from controlplane.signals.base import PollResult, wanted_from_targets
from controlplane.signals.prometheus import (
    PrometheusSource,
    PrometheusUnavailable,
    default_memory_query,
    default_utilization_query,
)
from tests.support.loopback import serving
from tests.support.prometheus import (
    PrometheusServer,
    free_port,
    missing_binaries,
    running_prometheus,
    serving_exporter,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
NAN = math.nan

#: (gpu, cluster, fusionplane_target, utilisation %, framebuffer used MiB, framebuffer free MiB)
GPUS: tuple[tuple[str, str, str, float, float, float], ...] = (
    ("0", "onprem", "", 30, 6144, 2048),  # 0.75 of memory in use
    ("1", "onprem", "", 60, 4096, 4096),  # 0.5
    ("0", "", "k8s", 90, 12288, 4096),  # 0.75
    ("0", "", "k8s-staging", 10, 0, 16384),  # must not leak into k8s
    ("0", "nanlab", "", NAN, NAN, 1024),
    ("0", "zerofb", "", 0, 0, 0),  # idle, and a memory fraction of 0/0
    ("0", "awspool", "", 20, 1000, 3000),
)
SERIES = 3 * len(GPUS)


def clock() -> datetime:
    return NOW


def values(result: PollResult) -> dict[str, float]:
    return {f"{s.source}/{s.key}": s.value for s in result.samples}


def target(name: str, provider: str = "local", *, query: str | None = None, selector: Any = None) -> Target:
    settings = {} if selector is None else {"prometheus_selector": selector}
    return Target(name=name, provider=provider, private=False, gpu_utilization_query=query, settings=settings)


def dcgm_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    labels = ("gpu", "cluster", "fusionplane_target")
    util = Gauge("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", labels, registry=registry)
    used = Gauge("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", labels, registry=registry)
    free = Gauge("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", labels, registry=registry)
    for gpu, cluster, name, utilisation, fb_used, fb_free in GPUS:
        util.labels(gpu, cluster, name).set(utilisation)
        used.labels(gpu, cluster, name).set(fb_used)
        free.labels(gpu, cluster, name).set(fb_free)
    return registry


def wait_for_all_series(prometheus: PrometheusServer) -> None:
    prometheus.wait_for(
        'count({__name__=~"DCGM_FI_DEV_.*"})', lambda result: bool(result) and result[0]["value"][1] == str(SERIES)
    )


@pytest.fixture(scope="module")
def exporter() -> Iterator[str]:
    with serving_exporter(dcgm_registry()) as address:
        yield address


@pytest.fixture(scope="module")
def prometheus(exporter: str) -> Iterator[PrometheusServer]:
    reason = missing_binaries()
    if reason is not None:
        pytest.skip(reason)
    with running_prometheus([exporter]) as server:
        wait_for_all_series(server)
        yield server


@pytest.fixture
def source(prometheus: PrometheusServer) -> Iterator[PrometheusSource]:
    polled = PrometheusSource(prometheus.url, ttl_seconds=45)
    yield polled
    polled.close()


def poll(source: PrometheusSource, *targets: Target, timeout_s: float = 10.0) -> PollResult:
    return source.poll(wanted_from_targets(targets), timeout_s=timeout_s, clock=clock)


# -- with a real Prometheus -----------------------------------------------------


@pytest.mark.timeout(60)
def test_utilisation_and_memory_per_target(source: PrometheusSource) -> None:
    result = poll(
        source,
        target("onprem", selector='cluster="onprem"'),
        target("k8s", "kubernetes"),  # no selector: fusionplane_target="k8s"
        target("aws-spot", "aws", query='avg(DCGM_FI_DEV_GPU_UTIL{cluster="awspool"}) / 100'),
        target("azure-spot", "azure"),  # a cloud without a query is not asked about at all
    )

    assert result.problems == []
    assert values(result) == pytest.approx(
        {
            "gpu_utilization/onprem": 0.45,
            "gpu_memory_used/onprem": 0.625,
            "gpu_utilization/k8s": 0.9,
            "gpu_memory_used/k8s": 0.75,
            "gpu_utilization/aws-spot": 0.2,
        },
        rel=1e-9,
    )
    assert {(s.observed_at, s.ttl_seconds) for s in result.samples} == {(NOW, 45.0)}


@pytest.mark.timeout(30)
def test_a_targets_own_query_replaces_the_default_utilisation_only(source: PrometheusSource) -> None:
    result = poll(
        source,
        target("onprem", query='max(DCGM_FI_DEV_GPU_UTIL{cluster="onprem"}) / 100', selector='cluster="onprem"'),
        # a scalar result, not a vector
        target("scalar", "azure", query='scalar(avg(DCGM_FI_DEV_GPU_UTIL{cluster="awspool"})) / 100'),
    )

    assert result.problems == []
    assert values(result) == pytest.approx(
        {"gpu_utilization/onprem": 0.6, "gpu_memory_used/onprem": 0.625, "gpu_utilization/scalar": 0.2}, rel=1e-9
    )


@pytest.mark.timeout(30)
def test_an_explicit_selector_gives_a_cloud_target_the_dcgm_queries(source: PrometheusSource) -> None:
    result = poll(source, target("aws-pool", "aws", selector='cluster="awspool"'))

    assert result.problems == []
    assert values(result) == pytest.approx(
        {"gpu_utilization/aws-pool": 0.2, "gpu_memory_used/aws-pool": 0.25}, rel=1e-9
    )


@pytest.mark.timeout(30)
def test_no_data_is_a_problem_naming_the_target_and_the_query(source: PrometheusSource) -> None:
    result = poll(source, target("ghost", selector='cluster="nowhere"'), target("k8s", "kubernetes"))

    nowhere = 'cluster="nowhere"'
    assert set(values(result)) == {"gpu_utilization/k8s", "gpu_memory_used/k8s"}
    assert result.problems == [
        f"gpu_utilization/ghost: no data (empty result) [query: {default_utilization_query(nowhere)}]",
        f"gpu_memory_used/ghost: no data (empty result) [query: {default_memory_query(nowhere)}]",
    ]


@pytest.mark.timeout(30)
def test_nan_and_infinity_give_no_sample(source: PrometheusSource) -> None:
    result = poll(
        source,
        target("nanlab", selector='cluster="nanlab"'),
        target("zerofb", selector='cluster="zerofb"'),
        target("inf", "aws", query="vector(1) / 0"),
    )

    # an idle GPU is a real 0; its memory fraction (0 MiB of 0 MiB) is not a number
    assert values(result) == {"gpu_utilization/zerofb": 0.0}
    assert len(result.problems) == 4
    by_signal = {problem.split(":", 1)[0]: problem for problem in result.problems}
    assert set(by_signal) == {
        "gpu_utilization/nanlab",
        "gpu_memory_used/nanlab",
        "gpu_memory_used/zerofb",
        "gpu_utilization/inf",
    }
    assert "value is NaN" in by_signal["gpu_utilization/nanlab"]
    assert "value is NaN" in by_signal["gpu_memory_used/zerofb"]
    assert "value is +Inf" in by_signal["gpu_utilization/inf"]


@pytest.mark.timeout(30)
def test_several_series_are_refused_not_averaged(source: PrometheusSource) -> None:
    query = 'DCGM_FI_DEV_GPU_UTIL{cluster="onprem"} / 100'
    result = poll(source, target("onprem", query=query, selector='cluster="onprem"'))

    assert values(result) == pytest.approx({"gpu_memory_used/onprem": 0.625}, rel=1e-9)
    [problem] = result.problems
    assert problem.startswith("gpu_utilization/onprem: 2 series where one value was expected")
    assert "aggregate them" in problem
    assert problem.endswith(f"[query: {query}]")


@pytest.mark.timeout(30)
def test_values_outside_0_to_1_are_refused_beyond_rounding(source: PrometheusSource) -> None:
    result = poll(
        source,
        target("percent", "aws", query='avg(DCGM_FI_DEV_GPU_UTIL{cluster="onprem"})'),  # forgot the / 100
        target("negative", "aws", query="vector(-0.5)"),
        target("rounding", "aws", query="vector(1 + 1e-9)"),
        target("range", "aws", query='DCGM_FI_DEV_GPU_UTIL{cluster="awspool"}[1m]'),
        target("text", "aws", query='"busy"'),
    )

    assert values(result) == {"gpu_utilization/rounding": 1.0}
    by_signal = {problem.split(":", 1)[0]: problem for problem in result.problems}
    assert set(by_signal) == {
        "gpu_utilization/percent",
        "gpu_utilization/negative",
        "gpu_utilization/range",
        "gpu_utilization/text",
    }
    assert "value 45 is outside 0..1; it looks like a percentage" in by_signal["gpu_utilization/percent"]
    assert "value -0.5 is outside 0..1 [" in by_signal["gpu_utilization/negative"]
    assert "a range vector" in by_signal["gpu_utilization/range"]
    assert "not a number: 'busy'" in by_signal["gpu_utilization/text"]


@pytest.mark.timeout(30)
def test_a_query_prometheus_refuses_does_not_stop_the_others(source: PrometheusSource) -> None:
    result = poll(
        source,
        target("broken", "aws", query="avg("),
        target("bad-selector", selector="cluster}"),
        target("onprem", selector='cluster="onprem"'),
    )

    assert values(result) == pytest.approx({"gpu_utilization/onprem": 0.45, "gpu_memory_used/onprem": 0.625}, rel=1e-9)
    assert len(result.problems) == 2
    assert result.problems[0].startswith("bad-selector: settings.prometheus_selector must be label matchers")
    assert result.problems[1].startswith("gpu_utilization/broken: refused by Prometheus: HTTP Status Code 400")
    assert "parse error" in result.problems[1]


@pytest.mark.timeout(60)
def test_a_stopped_prometheus_fails_the_poll_fast_and_a_restarted_one_recovers(exporter: str, tmp_path: Path) -> None:
    reason = missing_binaries()
    if reason is not None:
        pytest.skip(reason)
    port, data_dir = free_port(), tmp_path / "tsdb"
    source = PrometheusSource(f"http://127.0.0.1:{port}")
    wanted = [target("onprem", selector='cluster="onprem"')]
    expected = {"gpu_utilization/onprem": 0.45, "gpu_memory_used/onprem": 0.625}
    try:
        with running_prometheus([exporter], port=port, data_dir=data_dir) as server:
            wait_for_all_series(server)
            assert values(poll(source, *wanted)) == pytest.approx(expected, rel=1e-9)

        started = time.monotonic()
        with pytest.raises(PrometheusUnavailable, match="ConnectionError"):
            poll(source, *wanted, timeout_s=3.0)
        assert time.monotonic() - started < 3.0

        # same port, same data: the pooled connection of the old process must not linger
        with running_prometheus([exporter], port=port, data_dir=data_dir):
            result = poll(source, *wanted)
        assert result.problems == []
        assert values(result) == pytest.approx(expected, rel=1e-9)
    finally:
        source.close()


# -- backends that are not a healthy Prometheus ---------------------------------


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """Completes TCP handshakes (the kernel does, from the backlog) and never answers."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


@pytest.mark.timeout(30)
def test_a_silent_backend_fails_the_poll_within_its_timeout() -> None:
    many = [target(f"t{i}") for i in range(20)]
    with silent_server() as url:
        source = PrometheusSource(url)
        try:
            started = time.monotonic()
            with pytest.raises(PrometheusUnavailable, match="Timeout"):
                poll(source, *many, timeout_s=0.5)
            elapsed = time.monotonic() - started
        finally:
            source.close()
    assert 0.4 < elapsed < 2.0  # bounded; slack for CI load


class _Answering(BaseHTTPRequestHandler):
    """Answers every query with ``body`` and ``status`` after ``delay_s``."""

    status: ClassVar[int] = 200
    body: ClassVar[bytes] = b""
    content_type: ClassVar[str] = "application/json"
    delay_s: ClassVar[float] = 0.0

    def do_GET(self) -> None:
        time.sleep(self.delay_s)
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def answering(status: int, body: bytes, *, content_type: str = "application/json", delay_s: float = 0.0) -> Any:
    handler = type(
        "Handler", (_Answering,), {"status": status, "body": body, "content_type": content_type, "delay_s": delay_s}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    return serving(server)


ONE_VALUE = json.dumps(
    {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "0.5"]}]}}
).encode()


@pytest.mark.timeout(30)
def test_a_slow_backend_is_cut_off_at_the_timeout_keeping_what_was_read() -> None:
    many = [target(f"t{i}") for i in range(10)]  # 20 queries of 0.4 s each
    with answering(200, ONE_VALUE, delay_s=0.4) as server:
        source = PrometheusSource(f"http://127.0.0.1:{server.server_address[1]}")
        try:
            started = time.monotonic()
            result = poll(source, *many, timeout_s=1.0)
            elapsed = time.monotonic() - started
        finally:
            source.close()

    assert elapsed < 2.5  # bounded; slack for CI load
    assert 1 <= len(result.samples) <= 2
    assert set(values(result).values()) == {0.5}
    [stopped] = result.problems
    assert stopped.startswith(f"stopped after {len(result.samples)} of 20 queries (")
    assert "gpu_memory_used/t9" in stopped


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (200, b"<html><body>Grafana</body></html>", "text/html"),
        (200, b'{"status": "succ', "application/json"),
        (200, b"[1, 2]", "application/json"),
        (200, b'{"status": "success"}', "application/json"),
        (404, b"404 page not found", "text/plain"),
        (503, b"Service Unavailable", "text/plain"),
    ],
    ids=["html", "truncated-json", "json-list", "no-data", "not-found", "unavailable"],
)
@pytest.mark.timeout(30)
def test_garbage_from_the_backend_fails_the_poll_cleanly(status: int, body: bytes, content_type: str) -> None:
    with answering(status, body, content_type=content_type) as server:
        source = PrometheusSource(f"http://127.0.0.1:{server.server_address[1]}")
        try:
            with pytest.raises(PrometheusUnavailable, match=r"^Prometheus at http://127\.0\.0\.1:\d+: \S"):
                poll(source, target("onprem"), timeout_s=2.0)
        finally:
            source.close()


@pytest.mark.timeout(30)
def test_a_well_formed_answer_with_a_strange_result_is_a_problem() -> None:
    body = json.dumps({"status": "success", "data": {"resultType": "weird", "result": "x"}}).encode()
    with answering(200, body) as server:
        source = PrometheusSource(f"http://127.0.0.1:{server.server_address[1]}")
        try:
            result = poll(source, target("onprem"), timeout_s=2.0)
        finally:
            source.close()

    assert result.samples == []
    assert [p.split(":", 1)[0] for p in result.problems] == ["gpu_utilization/onprem", "gpu_memory_used/onprem"]
    assert all("unexpected result 'x'" in p for p in result.problems)


def test_the_constructor_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="window"):
        PrometheusSource("http://127.0.0.1:9", window="two minutes")
    with pytest.raises(ValueError, match="ttl_seconds"):
        PrometheusSource("http://127.0.0.1:9", ttl_seconds=0)
    with pytest.raises(ValueError, match="URL"):
        PrometheusSource("")
