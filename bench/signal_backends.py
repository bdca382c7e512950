"""The backends ``bench.signals`` polls, served on 127.0.0.1 from a process of their own.

Run by ``bench.signals`` (or alone: ``python -m bench.signal_backends``).
The backends live in a separate process, pinned to the other core when
there are two, so that the CPU they spend answering is never counted
against the control plane being measured: the bench wants the client side
of a poll only, as it would cost against real AWS, Azure, Kubernetes and
Prometheus.

* **Azure Retail Prices**: ``tests.fakes.azure_prices.FakeAzurePrices``
  with a catalogue built through its public ``vm_item`` (every meter a real
  answer holds per size: regular, Windows, Spot, Low Priority, dev/test,
  reservations) for :data:`AZURE_REGIONS` x :data:`AZURE_SIZES`.
* **EC2 ``DescribeSpotPriceHistory``**: moto's ``ThreadedMotoServer``
  (every price is moto's constant 0.00001; entries per (type, zone) as in
  moto's offerings; no paging).
* **Kubernetes**: kmock's ``KubernetesEmulator`` holding one cluster of
  :data:`POOLS` (50 GPU nodes, 300 pods), with node and pod objects shaped
  and sized like a real API server's (labels, taints, conditions, images,
  managed fields, container statuses).
* **Prometheus**: a real ``prometheus`` (``tests.support.prometheus``)
  scraping a DCGM-style exporter with every GPU of the cluster; skipped with
  a printed reason when the binary is missing.

When everything is up, one JSON line on stdout gives the URLs (and the
sizes of what a poll reads); then it serves until SIGTERM/SIGINT, until
stdin closes (``--watch-stdin``: the bench holds the other end, so the
backends end with it even if it is killed), or until ``--max-lifetime-s``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from bench.signal_cluster import (
    GPU_TAINT,
    POOL_LABEL,
    POOLS,
    SEED,
    Pool,
    cluster_objects,
    node_name,
    object_uid,
    pool_target,
)

__all__ = [
    "AWS_INSTANCE_TYPES",
    "AWS_REGIONS",
    "AZURE_REGIONS",
    "AZURE_SIZES",
    "GPU_TAINT",
    "POOL_LABEL",
    "POOLS",
    "Pool",
    "pool_target",
]

#: EC2 regions and GPU instance types the bench prices; every pair is in moto's offerings
AWS_REGIONS = ("eu-central-1", "eu-west-2", "us-east-1", "us-east-2", "us-west-2")
AWS_INSTANCE_TYPES = ("g4dn.2xlarge", "g4dn.xlarge", "g5.2xlarge", "g5.xlarge", "g6.xlarge")
#: Azure regions and GPU VM sizes, with a Linux pay-as-you-go list price (USD/h, made up in the API's range)
AZURE_REGIONS = ("eastus", "eastus2", "northeurope", "westeurope", "westus2")
AZURE_SIZES: dict[str, tuple[str, str, float]] = {
    # arm SKU name: (meter/sku name, series, Linux price)
    "Standard_NC4as_T4_v3": ("NC4as T4 v3", "NCasT4_v3", 0.526),
    "Standard_NC8as_T4_v3": ("NC8as T4 v3", "NCasT4_v3", 0.752),
    "Standard_NC16as_T4_v3": ("NC16as T4 v3", "NCasT4_v3", 1.204),
    "Standard_NC24ads_A100_v4": ("NC24ads A100 v4", "NCadsA100v4", 3.673),
    "Standard_NV36ads_A10_v5": ("NV36ads A10 v5", "NVadsA10v5", 3.200),
}
_AZURE_REGION_FACTOR = {"eastus": 1.0, "eastus2": 1.0, "westus2": 1.02, "westeurope": 1.17, "northeurope": 1.12}

#: the DCGM fields a real dcgm-exporter exports by default besides the three the source reads
_EXTRA_DCGM = ("DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE")
READY_TIMEOUT_S = 60.0


# ---- Azure -----------------------------------------------------------------------------------


def azure_catalogue() -> list[dict[str, Any]]:
    """Every meter of every (region, size), as the Retail Prices API lists them, plus another service."""
    from tests.fakes.azure_prices import vm_item

    items: list[dict[str, Any]] = []
    for region in AZURE_REGIONS:
        factor = _AZURE_REGION_FACTOR[region]
        for arm_sku, (sku, series, base) in AZURE_SIZES.items():
            linux = round(base * factor, 4)
            linux_product = f"Virtual Machines {series} Series"
            windows_product = f"{linux_product} Windows"
            items += [
                vm_item(region, arm_sku, sku, linux_product, linux),
                vm_item(region, arm_sku, sku, windows_product, round(linux * 1.4, 4)),
                vm_item(region, arm_sku, sku, linux_product, round(linux * 5500), price_type="Reservation",
                        reservation_term="1 Year"),
                vm_item(region, arm_sku, sku, linux_product, round(linux * 10500), price_type="Reservation",
                        reservation_term="3 Years"),
                vm_item(region, arm_sku, sku, windows_product, linux, price_type="DevTestConsumption"),
                vm_item(region, arm_sku, f"{sku} Low Priority", linux_product, round(linux * 0.2, 4)),
                vm_item(region, arm_sku, f"{sku} Low Priority", windows_product, round(linux * 0.36, 4)),
                vm_item(region, arm_sku, f"{sku} Spot", windows_product, round(linux * 0.62, 4)),
                vm_item(region, arm_sku, f"{sku} Spot", linux_product, round(linux * 0.3, 4)),
            ]  # fmt: skip
        # meters of other services in the same region, which the source's filter must leave out
        items.append(vm_item(region, "", "Hot LRS", "Blob Storage", 0.0208, unit="1 GB/Month", service="Storage"))
    return items


@contextlib.contextmanager
def azure_prices() -> Iterator[str]:
    from tests.fakes.azure_prices import FakeAzurePrices

    with FakeAzurePrices(items=azure_catalogue()) as fake:
        yield fake.url


# ---- EC2 -------------------------------------------------------------------------------------


@contextlib.contextmanager
def moto_ec2() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    # werkzeug logs one line per request on its own handler: noise on the bench's stderr
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        inner = getattr(server, "_server", None)
        if inner is not None:  # stop() leaves the listening socket open
            inner.server_close()


class KmockCluster:
    """kmock's Kubernetes emulator on 127.0.0.1, on its own event-loop thread, preloaded with the cluster."""

    def __init__(self, nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
        self.nodes, self.pods = nodes, pods
        self.url = ""
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)

    def __enter__(self) -> KmockCluster:
        self._thread.start()
        if not self._ready.wait(READY_TIMEOUT_S) or self._failed is not None:
            raise RuntimeError(f"kmock did not start: {self._failed!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to __enter__, which waits on _ready
            self._failed = exc
            self._ready.set()

    async def _serve(self) -> None:
        import kmock

        handler = kmock.KubernetesEmulator()
        handler.resources["v1/nodes"] = kmock.ResourceInfo(namespaced=False, kind="Node")
        handler.resources["v1/pods"] = kmock.ResourceInfo(namespaced=True, kind="Pod")
        # stored directly (kmock's documented way to preload objects): 650 create/patch calls
        # over HTTP would only slow the start, and the objects are the same
        for node in self.nodes:
            handler.objects["v1/nodes", None, node["metadata"]["name"]] = node
        for pod in self.pods:
            handler.objects["v1/pods", pod["metadata"]["namespace"], pod["metadata"]["name"]] = pod
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with handler, kmock.Server(handler, host="127.0.0.1") as server:
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()


# ---- Prometheus and the DCGM exporter --------------------------------------------------------


def dcgm_registry() -> tuple[Any, int]:
    """A registry with dcgm-exporter's series for every GPU of the cluster; and how many GPUs."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    labels = ("gpu", "UUID", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION", "fusionplane_target")
    util = Gauge("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", labels, registry=registry)
    used = Gauge("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", labels, registry=registry)
    free = Gauge("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", labels, registry=registry)
    extra = [Gauge(name, name, labels, registry=registry) for name in _EXTRA_DCGM]
    rng = random.Random(SEED)
    gpus = 0
    for pool in POOLS:
        for index in range(pool.nodes):
            host = node_name(pool, index)
            for gpu in range(pool.gpus_per_node):
                values = (str(gpu), object_uid("gpu", host, str(gpu)), f"nvidia{gpu}", pool.product, host, "550.90.07")
                series = (*values, pool_target(pool))
                fb_used = rng.randint(0, pool.memory_mib)
                util.labels(*series).set(rng.randint(0, 100))
                used.labels(*series).set(fb_used)
                free.labels(*series).set(pool.memory_mib - fb_used)
                for gauge in extra:
                    gauge.labels(*series).set(rng.randint(30, 1500))
                gpus += 1
    return registry, gpus


@contextlib.contextmanager
def prometheus(scrape_interval_s: float) -> Iterator[dict[str, Any]]:
    """A real Prometheus scraping the DCGM exporter, once every GPU's series is queryable; or why not."""
    from tests.support.prometheus import missing_binaries, running_prometheus, serving_exporter

    reason = missing_binaries()
    if reason is not None:
        print(f"signal_backends: Prometheus skipped: {reason}", file=sys.stderr, flush=True)
        yield {"prometheus": None, "prometheus_skipped": reason}
        return
    registry, gpus = dcgm_registry()
    with (
        serving_exporter(registry) as exporter,
        running_prometheus([exporter], scrape_interval_s=scrape_interval_s) as server,
    ):
        # the first scrape comes up to one interval after the start: wait for it, or the first polls find no data
        server.wait_for(
            "count(DCGM_FI_DEV_GPU_UTIL)",
            lambda result: bool(result) and int(float(result[0]["value"][1])) == gpus,
            timeout_s=READY_TIMEOUT_S,
        )
        yield {
            "prometheus": server.url,
            "prometheus_pid": server.process.pid,
            "dcgm_exporter": f"http://{exporter}/metrics",
            "dcgm_gpus": gpus,
            "dcgm_series": gpus * (3 + len(_EXTRA_DCGM)),
            "scrape_interval_s": scrape_interval_s,
        }


# ---- the process -----------------------------------------------------------------------------


def pin_to_last_core() -> str:
    """Pin this process (and what it starts) to the last allowed core, away from the bench's first one."""
    if not hasattr(os, "sched_getaffinity"):
        return "not pinned (no sched_setaffinity here)"
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return f"not pinned: only core {cores[0]} is allowed, the backends share it with the bench"
    os.sched_setaffinity(0, {cores[-1]})
    return f"pinned to core {cores[-1]}"


def _json_bytes(objects: list[dict[str, Any]]) -> int:
    """About what a list answer of these objects weighs on the wire (kmock adds a few bytes of envelope)."""
    return len(json.dumps(objects).encode())


def _wait_for_stop(stop: threading.Event, max_lifetime_s: float) -> None:
    deadline = time.monotonic() + max_lifetime_s
    # short waits so that the signal handler's flag is seen at once; bounded by the lifetime
    while not stop.is_set() and time.monotonic() < deadline:
        stop.wait(0.5)


def _watch_stdin(stop: threading.Event) -> None:
    with contextlib.suppress(OSError, ValueError):
        while sys.stdin.buffer.read(4096):  # ends at EOF: the bench closed its end, or died
            pass
    stop.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-lifetime-s", type=float, default=600.0)
    parser.add_argument("--scrape-interval-s", type=float, default=5.0)
    parser.add_argument("--watch-stdin", action="store_true", help="exit when stdin reaches EOF")
    args = parser.parse_args(argv)
    pinned = pin_to_last_core()  # first, so that every thread and child process inherits it
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.watch_stdin:
        threading.Thread(target=_watch_stdin, args=(stop,), name="stdin", daemon=True).start()
    started = time.monotonic()
    nodes, pods = cluster_objects()
    with contextlib.ExitStack() as stack:
        azure_url = stack.enter_context(azure_prices())
        aws_url = stack.enter_context(moto_ec2())
        cluster = stack.enter_context(KmockCluster(nodes, pods))
        prom = stack.enter_context(prometheus(args.scrape_interval_s))
        line = {
            "pid": os.getpid(),
            "pinned": pinned,
            "azure": azure_url,
            "aws": aws_url,
            "kubernetes": cluster.url,
            "kubernetes_nodes": len(nodes),
            "kubernetes_pods": len(pods),
            "kubernetes_node_list_bytes": _json_bytes(nodes),
            "kubernetes_pod_list_bytes": _json_bytes(pods),
            **prom,
            "started_in_s": round(time.monotonic() - started, 1),
        }
        print(json.dumps(line), flush=True)
        _wait_for_stop(stop, args.max_lifetime_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
