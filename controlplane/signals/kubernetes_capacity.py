"""Free GPUs on Kubernetes targets (``free_gpus/<target>``), read from the API server.

For every target whose provider is ``kubernetes``, this source lists the
cluster's Nodes and its non-terminal Pods with the official ``kubernetes``
client and counts, the way kube-scheduler would, how many GPUs a new pod of
that target could still get (docs/signals.md, "Free GPUs on Kubernetes"):

* a node counts when it is Ready (condition ``Ready`` is ``True``), not
  cordoned (``spec.unschedulable``), carries no ``NoSchedule``/``NoExecute``
  taint the target's tolerations do not tolerate, and has every label of the
  target's ``node_selector``;
* its free GPUs are its allocatable ``nvidia.com/gpu`` (``gpu_resource``)
  minus the effective GPU requests of the pods bound to it whose phase is not
  Succeeded or Failed, clamped at 0 per node (an over-committed node is
  reported as a problem) and rounded down (half a GPU holds no pod).

Targets on the same cluster (same API client) share one node list and one
pod list per poll: the pod list is the expensive read, so it is made once.
Every call is bounded by the poll's ``timeout_s`` (``_request_timeout``), and
the clusters are read on worker threads that ``poll`` waits for at most until
the deadline, so a server that accepts and never answers, or an injected
client that retries, cannot hold the poll longer than ``timeout_s`` (plus a
small grace).

A target that maps task priorities to PriorityClasses (``priority_classes``)
also gets ``preemptible_gpus/<target>/<priority>``: the GPUs its eligible
nodes give to pods of a lower priority than that class, which a new pod of
the class would preempt (:mod:`controlplane.signals.kubernetes_preemption`).

The source needs ``list`` on ``nodes`` and ``pods`` at cluster scope
(a ClusterRole): a GPU used by a pod in any namespace is not free; and,
where a target names PriorityClasses, ``list`` on ``priorityclasses``
(``scheduling.k8s.io``). Without that one, free GPUs are still counted and
the missing preemption counts are reported as a problem.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from controlplane.domain import CAPACITY_SOURCE, PREEMPTIBLE_SOURCE, SignalSample, Target, preemptible_key
from controlplane.signals.base import PollResult, Wanted
from controlplane.signals.kubernetes_preemption import PriorityClassInfo, pod_priority, preemptible_gpus
from controlplane.signals.kubernetes_preemption import priority_classes as read_priority_classes
from controlplane.signals.kubernetes_reads import MalformedResponse, describe, list_all
from providers.kubeconfig import cluster_client

__all__ = [
    "DEFAULT_GPU_RESOURCE",
    "DEFAULT_PAGE_SIZE",
    "POD_FIELD_SELECTOR",
    "KubernetesCapacityError",
    "KubernetesCapacitySource",
    "MalformedResponse",
    "NodeCount",
    "NodeRules",
    "count_free_gpus",
    "list_all",
    "node_is_eligible",
    "pod_gpu_request",
    "requests_by_node",
    "tolerates",
]

DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
#: kubectl's and client-go's page size: big enough for few round trips, small enough for the API server
DEFAULT_PAGE_SIZE = 500
#: the taint the scheduler treats a cordoned node as carrying (NodeUnschedulable plugin)
UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
#: pods in these phases hold no resources; the API server filters them out for us (field selector)
TERMINAL_PHASES = ("Succeeded", "Failed")
POD_FIELD_SELECTOR = ",".join(f"status.phase!={phase}" for phase in TERMINAL_PHASES)
#: the taint effects that keep a new pod off a node (PreferNoSchedule is only a preference)
_HARD_EFFECTS = ("NoSchedule", "NoExecute")
#: how long ``poll`` waits past the deadline for a worker whose socket timeout fires right at it
_GRACE_S = 0.2
_ZERO = Decimal(0)

ApiClientFactory = Callable[[Target], Any]


class KubernetesCapacityError(RuntimeError):
    """No kubernetes target could be sampled; the message lists each target's problem."""


# -- the counting rules (pure: plain dicts as the API server sends them) ---------------------------


@dataclass(frozen=True, kw_only=True)
class NodeRules:
    """What a target asks of a node (from its settings), validated."""

    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    gpu_resource: str = DEFAULT_GPU_RESOURCE

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> NodeRules:
        """Read ``node_selector``, ``tolerations`` and ``gpu_resource``; ValueError names the bad one."""
        selector = settings.get("node_selector") or {}
        if not isinstance(selector, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in selector.items()
        ):
            # Kubernetes' nodeSelector is map[string]string: "true" and true are not the same label value
            raise ValueError("settings.node_selector must map label names to string values")
        tolerations = settings.get("tolerations") or []
        if not isinstance(tolerations, list):
            raise ValueError("settings.tolerations must be a list of Kubernetes toleration objects")
        for i, tol in enumerate(tolerations):
            if not isinstance(tol, Mapping):
                raise ValueError(f"settings.tolerations[{i}] must be an object")
            for key in ("key", "operator", "value", "effect"):
                if tol.get(key) is not None and not isinstance(tol[key], str):
                    raise ValueError(f"settings.tolerations[{i}].{key} must be a string")
        resource = settings.get("gpu_resource", DEFAULT_GPU_RESOURCE)
        if not isinstance(resource, str) or not resource:
            raise ValueError("settings.gpu_resource must be a resource name such as nvidia.com/gpu")
        return cls(node_selector=dict(selector), tolerations=tuple(tolerations), gpu_resource=resource)


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """Kubernetes' ``Toleration.ToleratesTaint`` (k8s.io/api/core/v1/toleration.go).

    An empty effect matches every effect and an empty key every key;
    operator ``Exists`` matches any value, ``Equal`` (or none) needs the same
    value. An operator this code does not know tolerates nothing, so a newer
    toleration never makes a node look free when it is not.
    """
    effect = toleration.get("effect") or ""
    if effect and effect != (taint.get("effect") or ""):
        return False
    key = toleration.get("key") or ""
    if key and key != (taint.get("key") or ""):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    if operator == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def _dict(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedResponse(f"{what} is not an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedResponse(f"{what} is not a list")
    return value


def _quantity(value: Any, what: str) -> Decimal:
    # parse_quantity also takes numbers; the API server only ever sends strings, but a hand-fed number is harmless
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise MalformedResponse(f"{what} is not a quantity: {value!r}")
    try:
        quantity: Decimal = parse_quantity(value)
    except (ValueError, ArithmeticError) as exc:
        raise MalformedResponse(f"{what} is not a quantity: {value!r}") from exc
    if not quantity.is_finite():
        raise MalformedResponse(f"{what} is not a quantity: {value!r}")
    return quantity


def node_is_eligible(node: Mapping[str, Any], rules: NodeRules) -> tuple[bool, str]:
    """Could a pod of the target land on this node? (the answer, and why not)."""
    meta = _dict(node.get("metadata"), "node metadata")
    spec = _dict(node.get("spec"), "node spec")
    status = _dict(node.get("status"), "node status")
    labels = _dict(meta.get("labels"), "node labels")
    for name, value in rules.node_selector.items():
        if labels.get(name) != value:
            return False, f"label {name}={value} missing"
    conditions = _list(status.get("conditions"), "node conditions")
    if not any(isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
        return False, "not Ready"
    # A cordoned node is skipped unless the pod tolerates the unschedulable taint (the scheduler's
    # NodeUnschedulable plugin); the node controller also adds that taint, this covers the gap before.
    if spec.get("unschedulable") is True and not any(tolerates(t, UNSCHEDULABLE_TAINT) for t in rules.tolerations):
        return False, "cordoned"
    for taint in _list(spec.get("taints"), "node taints"):
        taint = _dict(taint, "node taint")
        if taint.get("effect") in _HARD_EFFECTS and not any(tolerates(t, taint) for t in rules.tolerations):
            return False, f"taint {taint.get('key')}={taint.get('value') or ''}:{taint.get('effect')} not tolerated"
    return True, ""


def _container_request(container: Any, resource: str, what: str) -> Decimal:
    # Requests, else limits: for extended resources the API server defaults a missing request to the
    # limit at admission, so a stored pod always has both; reading limits covers objects never admitted.
    resources = _dict(_dict(container, what).get("resources"), f"{what}.resources")
    for part in ("requests", "limits"):
        values = _dict(resources.get(part), f"{what}.resources.{part}")
        if resource in values:
            return _quantity(values[resource], f"{what}.resources.{part}[{resource}]")
    return _ZERO


def pod_gpu_request(pod: Mapping[str, Any], resource: str = DEFAULT_GPU_RESOURCE) -> Decimal:
    """The pod's effective request of ``resource``, as kube-scheduler computes it.

    ``resourcehelper.PodRequests`` (k8s.io/component-helpers/resource): the
    sum of the app containers, against the largest single init container
    (an init container runs alone, before the apps); sidecars (init containers
    with ``restartPolicy: Always``) keep running, so they add to the sum and
    to every init container started after them; then ``spec.overhead``.
    """
    spec = _dict(pod.get("spec"), "pod spec")
    total = sum(
        (_container_request(c, resource, "container") for c in _list(spec.get("containers"), "containers")), _ZERO
    )
    sidecars, init_peak = _ZERO, _ZERO
    for container in _list(spec.get("initContainers"), "initContainers"):
        request = _container_request(container, resource, "init container")
        if _dict(container, "init container").get("restartPolicy") == "Always":
            total += request
            sidecars += request
            running = sidecars
        else:
            running = request + sidecars
        init_peak = max(init_peak, running)
    effective = max(total, init_peak)
    overhead = _dict(spec.get("overhead"), "pod overhead")
    if resource in overhead:
        effective += _quantity(overhead[resource], f"pod overhead[{resource}]")
    return effective


@dataclass(frozen=True, kw_only=True)
class NodeCount:
    """One counted node: what it offers, what its pods take, what is left for the target."""

    name: str
    allocatable: Decimal
    requested: Decimal
    free: int

    @property
    def over_committed(self) -> bool:
        return self.requested > self.allocatable


def _node_name(node: Mapping[str, Any]) -> str:
    name = _dict(node.get("metadata"), "node metadata").get("name")
    if not isinstance(name, str) or not name:
        raise MalformedResponse("a node has no metadata.name")
    return name


def requests_by_node(pods: Iterable[Mapping[str, Any]], resource: str) -> dict[str, Decimal]:
    """GPU requests of the pods bound to each node, skipping pods that hold nothing.

    Unbound pods (no ``spec.nodeName``) hold no node's GPUs yet; terminal
    pods are dropped again here even though the field selector already did,
    so a server that ignores the selector cannot make GPUs look taken.
    """
    used: dict[str, Decimal] = {}
    for pod in pods:
        pod = _dict(pod, "pod")
        node = _dict(pod.get("spec"), "pod spec").get("nodeName")
        phase = _dict(pod.get("status"), "pod status").get("phase")
        if not node or phase in TERMINAL_PHASES:
            continue
        request = pod_gpu_request(pod, resource)
        if request:
            used[node] = used.get(node, _ZERO) + request
    return used


def count_free_gpus(
    nodes: Sequence[Mapping[str, Any]], used: Mapping[str, Decimal], rules: NodeRules
) -> list[NodeCount]:
    """Every eligible node with its free GPUs (``used``: :func:`requests_by_node` for ``rules.gpu_resource``)."""
    counted: list[NodeCount] = []
    for node in nodes:
        node = _dict(node, "node")
        name = _node_name(node)
        eligible, _why = node_is_eligible(node, rules)
        if not eligible:
            continue
        allocatable_map = _dict(_dict(node.get("status"), "node status").get("allocatable"), "node allocatable")
        raw = allocatable_map.get(rules.gpu_resource)
        allocatable = _ZERO if raw is None else _quantity(raw, f"node {name} allocatable[{rules.gpu_resource}]")
        requested = used.get(name, _ZERO)
        left = max(allocatable - requested, _ZERO)
        counted.append(
            NodeCount(
                name=name,
                allocatable=allocatable,
                requested=requested,
                free=int(left.to_integral_value(rounding=ROUND_FLOOR)),
            )
        )
    return counted


# -- reading the API server -----------------------------------------------------------------------


@dataclass
class _Cluster:
    """The targets read through one API client: an injected ``client``, or the ``key`` of a built one."""

    client: Any = None
    key: tuple[str | None, str | None] = (None, None)
    targets: list[tuple[Target, NodeRules]] = field(default_factory=list)

    @property
    def wants_priority_classes(self) -> bool:
        return any(target.settings.get("priority_classes") for target, _ in self.targets)


@dataclass(frozen=True, kw_only=True)
class _ClusterRead:
    """One cluster's lists; ``classes`` is None with ``classes_problem`` when the classes could not be read."""

    nodes: list[Mapping[str, Any]]
    pods: list[Mapping[str, Any]]
    classes: Mapping[str, PriorityClassInfo] | None = None
    classes_problem: str = ""


class KubernetesCapacitySource:
    """The ``kubernetes`` signal source: ``free_gpus/<target>`` for each kubernetes target.

    ``api_client_for(target)`` returns the ``kubernetes.client.ApiClient`` of
    a target's cluster; targets it returns the same client for share one read
    per poll. Without it, a client is built from the target's settings
    (``kubeconfig`` and ``context``; else in-cluster config; else the default
    kubeconfig, ``$KUBECONFIG`` or ``~/.kube/config``) and cached per
    (kubeconfig, context). Built clients never retry (the poll's deadline
    and the hub's backoff decide when to try again).
    """

    name = "kubernetes"

    def __init__(
        self,
        *,
        api_client_for: ApiClientFactory | None = None,
        ttl_seconds: float = 30.0,
        page_size: int = DEFAULT_PAGE_SIZE,
        max_workers: int = 8,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.ttl_seconds, self.page_size, self.max_workers = ttl_seconds, page_size, max(1, max_workers)
        self._factory = api_client_for
        self._clients: dict[tuple[str | None, str | None], Any] = {}
        self._lock = threading.Lock()

    # -- clients ---------------------------------------------------------------------------------
    @staticmethod
    def client_key(target: Target) -> tuple[str | None, str | None]:
        """The cache key of a built client: (kubeconfig path, context), None where the settings name none."""
        kubeconfig, context = target.settings.get("kubeconfig"), target.settings.get("context")
        for name, value in (("kubeconfig", kubeconfig), ("context", context)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"settings.{name} must be a non-empty string")
        return (os.path.expanduser(kubeconfig) if kubeconfig else None, context)

    def _built_client(self, key: tuple[str | None, str | None]) -> Any:
        with self._lock:
            client = self._clients.get(key)
        if client is not None:
            return client
        kubeconfig, context = key
        client = cluster_client(kubeconfig, context)
        with self._lock:
            cached = self._clients.setdefault(key, client)
        if cached is not client:  # another worker built the same one meanwhile
            client.close()
        return cached

    def close(self) -> None:
        """Close the clients this source built (injected ones belong to their owner)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    # -- polling ---------------------------------------------------------------------------------
    def poll(self, wanted: Wanted, *, timeout_s: float, clock: Callable[[], datetime]) -> PollResult:
        targets = wanted.kubernetes
        if not targets:
            return PollResult()
        # stamped before reading: a sample never claims to be fresher than the data behind it
        observed_at = clock()
        deadline = time.monotonic() + timeout_s
        problems: list[str] = []
        clusters: dict[object, _Cluster] = {}
        for target in targets:
            try:
                rules = NodeRules.from_settings(target.settings)
                key: object
                if self._factory is not None:
                    client = self._factory(target)
                    key = ("injected", id(client))
                    cluster = clusters.setdefault(key, _Cluster(client=client))
                else:
                    built = self.client_key(target)
                    key = ("built", built)
                    cluster = clusters.setdefault(key, _Cluster(key=built))
            except Exception as exc:
                problems.append(f"{target.name}: {describe(exc)}")
                continue
            cluster.targets.append((target, rules))

        samples: list[SignalSample] = []
        executor = ThreadPoolExecutor(max_workers=min(self.max_workers, max(1, len(clusters))))
        try:
            futures = {
                name: executor.submit(self._read_cluster, cluster, deadline) for name, cluster in clusters.items()
            }
            wait_futures(futures.values(), timeout=max(deadline - time.monotonic(), 0.0) + _GRACE_S)
            for name, cluster in clusters.items():
                problems_here, samples_here = self._count(cluster, futures[name], timeout_s, observed_at)
                problems.extend(problems_here)
                samples.extend(samples_here)
        finally:
            # a worker past the deadline is left to its socket timeout; it holds nothing we wait for
            executor.shutdown(wait=False, cancel_futures=True)
        if not samples:
            raise KubernetesCapacityError("; ".join(problems) or "no kubernetes target could be read")
        return PollResult(samples=samples, problems=problems)

    def _read_cluster(self, cluster: _Cluster, deadline: float) -> _ClusterRead:
        # built here, on the worker, so that a slow kubeconfig exec plugin is bounded by the deadline too
        client = cluster.client if cluster.client is not None else self._built_client(cluster.key)
        core = kubernetes.client.CoreV1Api(client)
        nodes = list_all(core.list_node, deadline=deadline, page_size=self.page_size, what="node")
        pods = list_all(
            core.list_pod_for_all_namespaces,
            deadline=deadline,
            page_size=self.page_size,
            what="pod",
            field_selector=POD_FIELD_SELECTOR,
        )
        if not cluster.wants_priority_classes:
            return _ClusterRead(nodes=nodes, pods=pods)
        # read last and on its own: a cluster role without priorityclasses still gives free GPUs
        scheduling = kubernetes.client.SchedulingV1Api(client)
        try:
            items = list_all(
                scheduling.list_priority_class, deadline=deadline, page_size=self.page_size, what="priority class"
            )
            return _ClusterRead(nodes=nodes, pods=pods, classes=read_priority_classes(items))
        except ApiException as exc:
            problem = describe(exc, needs="list on scheduling.k8s.io priorityclasses")
        except ValueError as exc:
            problem = f"malformed API answer: {exc}"
        return _ClusterRead(nodes=nodes, pods=pods, classes_problem=f"cannot count preemptible GPUs: {problem}")

    def _count(
        self,
        cluster: _Cluster,
        future: Future[_ClusterRead],
        timeout_s: float,
        observed_at: datetime,
    ) -> tuple[list[str], list[SignalSample]]:
        names = [target.name for target, _ in cluster.targets]
        if not future.done():
            return [f"{name}: timed out after {timeout_s:g}s reading nodes and pods" for name in names], []
        try:
            read = future.result()
        except Exception as exc:
            return [f"{name}: {describe(exc)}" for name in names], []
        problems: list[str] = []
        samples: list[SignalSample] = []
        used_by_resource: dict[str, dict[str, Decimal]] = {}
        for target, rules in cluster.targets:
            try:
                if rules.gpu_resource not in used_by_resource:
                    used_by_resource[rules.gpu_resource] = requests_by_node(read.pods, rules.gpu_resource)
                counted = count_free_gpus(read.nodes, used_by_resource[rules.gpu_resource], rules)
            except MalformedResponse as exc:
                problems.append(f"{target.name}: malformed API answer: {exc}")
                continue
            for node in counted:
                if node.over_committed:
                    problems.append(
                        f"{target.name}: node {node.name} is over-committed: pods request {node.requested} "
                        f"{rules.gpu_resource}, {node.allocatable} allocatable (counted as 0 free)"
                    )
            free = sum(node.free for node in counted)
            samples.append(
                SignalSample(
                    source=CAPACITY_SOURCE,
                    key=target.name,
                    value=float(free),
                    observed_at=observed_at,
                    ttl_seconds=self.ttl_seconds,
                )
            )
            if target.settings.get("priority_classes"):
                found, why = self._preemptible(target, rules, read, [node.name for node in counted], observed_at)
                samples.extend(found)
                problems.extend(why)
        return problems, samples

    def _preemptible(
        self, target: Target, rules: NodeRules, read: _ClusterRead, eligible: list[str], observed_at: datetime
    ) -> tuple[list[SignalSample], list[str]]:
        if read.classes is None:
            return [], [f"{target.name}: {read.classes_problem}"]

        def held_below(value: int) -> Mapping[str, Decimal]:
            return requests_by_node((pod for pod in read.pods if pod_priority(pod) < value), rules.gpu_resource)

        try:
            counts, problems = preemptible_gpus(target, read.classes, eligible, held_below)
        except ValueError as exc:
            return [], [f"{target.name}: malformed API answer: {exc}"]
        samples = [
            SignalSample(
                source=PREEMPTIBLE_SOURCE,
                key=preemptible_key(target.name, priority),
                value=float(count),
                observed_at=observed_at,
                ttl_seconds=self.ttl_seconds,
            )
            for priority, count in counts.items()
        ]
        return samples, problems
