"""kmock's Kubernetes emulator on 127.0.0.1, on its own event loop thread, with a bit more of an API server.

kmock 0.8 (``KubernetesEmulator``) stores what a client creates, patches and
deletes and serves it back; it stamps nothing and its lists ignore
``labelSelector``, ``fieldSelector``, ``limit`` and ``continue``. For the
provider tests :class:`KmockCluster` adds, in front of it:

- what the API server stamps on create: ``metadata.uid``,
  ``creationTimestamp``, ``resourceVersion`` and the namespace of the URL;
- lists of the declared resources filtered by namespace and by an
  equality ``labelSelector`` (``a=b,c!=d,e``), sorted by namespace/name and
  paged with ``limit``/``continue``. ``ignore_label_selector`` makes it
  answer every object, as kmock (or a careless proxy) would; ``fieldSelector``
  is always ignored, as kmock does;
- faults: :meth:`KmockCluster.fail_next` answers the next matching request
  with a Kubernetes error *before* kmock stores anything, so a refused
  create leaves nothing behind, as on a real cluster.

There is no controller: tests create a Job's pod themselves (:func:`start_pod`)
and set Job and pod status with the client's ``*_status`` patch calls.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import kmock
import kubernetes

from tests.support.loopback import SilentServer, free_port

__all__ = [
    "EVENTS",
    "JOBS",
    "PODS",
    "SECRETS",
    "KmockCluster",
    "SilentServer",
    "free_port",
    "kmock_cluster",
    "write_kubeconfig",
]

JOBS = kmock.resource("batch", "v1", "jobs")
PODS = kmock.resource("", "v1", "pods")
SECRETS = kmock.resource("", "v1", "secrets")
EVENTS = kmock.resource("", "v1", "events")
_DECLARED = {
    "batch/v1/jobs": "Job",
    "v1/pods": "Pod",
    "v1/secrets": "Secret",
    "v1/events": "Event",
}
START_TIMEOUT_S = 10.0


@attrs.define(kw_only=True)
class _ApiServer(kmock.KubernetesEmulator):
    """The emulator, stamping created objects and answering queued faults before it stores anything."""

    cluster: KmockCluster | None = None

    async def _handle(self, request: kmock.Request) -> Any:
        cluster = self.cluster
        if cluster is not None:
            fault = cluster._take_fault(request)
            if fault is not None:
                raise fault  # rendered as a Kubernetes Status by kmock; nothing stored
            if request.action == kmock.action.CREATE and isinstance(request.data, dict):
                meta = request.data.setdefault("metadata", {})
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", cluster.now().strftime("%Y-%m-%dT%H:%M:%SZ"))
                meta["resourceVersion"] = str(cluster._next_version())
                if request.namespace:
                    meta["namespace"] = request.namespace
        return await super()._handle(request)


class KmockCluster:
    """One emulated API server; use as a context manager (it starts and stops its thread)."""

    def __init__(self, *, port: int | None = None, ignore_label_selector: bool = False) -> None:
        self.port_wanted = port
        self.ignore_label_selector = ignore_label_selector
        self.url = ""
        self.handler: _ApiServer
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._faults: deque[tuple[Callable[[Any], bool], kmock.KubernetesError]] = deque()
        self._faults_lock = threading.Lock()
        self._version = 0
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kmock-cluster", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> KmockCluster:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S) or self._failed is not None:
            raise RuntimeError(f"kmock did not start: {self._failed!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(START_TIMEOUT_S)
        assert not self._thread.is_alive(), "kmock's loop did not stop"

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to __enter__, which waits for _ready
            self._failed = exc
            self._ready.set()

    async def _serve(self) -> None:
        handler = _ApiServer(cluster=self)
        for key, kind in _DECLARED.items():
            # declared, so that listing a resource with no objects yet is an empty list and not a 404
            handler.resources[key] = kmock.ResourceInfo(namespaced=True, kind=kind)
        for resource in (JOBS, PODS, SECRETS, EVENTS):
            handler[kmock.action.LIST, resource] << self._list
        self.handler = handler
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with handler, kmock.Server(handler, host="127.0.0.1", port=self.port_wanted) as server:
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    # -- test controls ---------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        message: str,
        *,
        method: str | None = None,
        resource: Any = None,
        reason: str = "Failure",
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests matching ``method`` and ``resource`` with HTTP ``status``."""

        def matches(request: Any) -> bool:
            return (method is None or request.method == method) and (resource is None or request.resource == resource)

        error = kmock.KubernetesError(status=status, reason=reason, message=message, details={"kind": "test"})
        with self._faults_lock:
            for _ in range(times):
                self._faults.append((matches, error))

    def _take_fault(self, request: Any) -> kmock.KubernetesError | None:
        with self._faults_lock:
            for i, (matches, error) in enumerate(self._faults):
                if matches(request):
                    del self._faults[i]
                    return error
        return None

    def _next_version(self) -> int:
        self._version += 1
        return self._version

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on kmock's loop (its objects and request log are the loop's to touch)."""
        assert self._loop is not None

        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(START_TIMEOUT_S)

    def requests(self, *, resource: Any = None, method: str | None = None) -> list[Any]:
        """The requests kmock received, optionally of one resource and HTTP method."""
        found: list[Any] = self.on_loop(
            lambda: [
                r
                for r in self.handler
                if (resource is None or r.resource == resource) and (method is None or r.method == method)
            ]
        )
        return found

    def objects(self, resource: Any, namespace: str | None = None) -> list[dict[str, Any]]:
        """The live (not deleted) stored objects of ``resource``, as plain dicts."""
        found: list[dict[str, Any]] = self.on_loop(
            lambda: [
                json.loads(json.dumps(dict(obj.raw)))
                for (res, ns, _name), obj in self.handler.objects.items()
                if res == resource and not obj.deleted and (namespace is None or ns == namespace)
            ]
        )
        return found

    # -- the API server's list -------------------------------------------------------------------

    def _list(self, request: Any) -> Any:
        params = request.params
        objects = sorted(
            (
                ((namespace or "", name), dict(obj.raw))
                for (resource, namespace, name), obj in self.handler.objects.items()
                if resource == request.resource and not obj.deleted
                if request.namespace is None or namespace == request.namespace
            ),
            key=lambda pair: pair[0],
        )
        selector = params.get("labelSelector", "")
        if selector and not self.ignore_label_selector:
            try:
                objects = [(k, o) for k, o in objects if _selects(selector, o.get("metadata", {}).get("labels") or {})]
            except ValueError as exc:
                return kmock.KubernetesError(status=400, reason="BadRequest", message=str(exc))
        token = params.get("continue")
        if token:
            after = tuple(json.loads(base64.urlsafe_b64decode(token))["after"])
            objects = [(k, o) for k, o in objects if k > after]
        limit = int(params.get("limit") or 0)
        page = objects[:limit] if limit else objects
        metadata: dict[str, Any] = {"resourceVersion": str(self._version)}
        if limit and len(objects) > limit:
            metadata["continue"] = base64.urlsafe_b64encode(json.dumps({"after": list(page[-1][0])}).encode()).decode()
            metadata["remainingItemCount"] = len(objects) - limit
        return {"apiVersion": "v1", "kind": "List", "metadata": metadata, "items": [o for _, o in page]}


def _selects(selector: str, labels: Mapping[str, Any]) -> bool:
    """Equality-based label selection (``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``)."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif " in " in term or " notin " in term:
            raise ValueError(f"set-based selector not emulated: {term}")
        elif term not in labels:
            return False
    return True


@contextmanager
def kmock_cluster(**kwargs: Any) -> Iterator[KmockCluster]:
    with KmockCluster(**kwargs) as cluster:
        yield cluster


def write_kubeconfig(path: Path, contexts: Mapping[str, str], *, current: str | None = None) -> Path:
    """A kubeconfig with one context (and cluster) per server URL; JSON is YAML to the loader."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": c, "cluster": {"server": u}} for c, u in contexts.items()],
        "contexts": [{"name": c, "context": {"cluster": c, "user": "tester"}} for c in contexts],
        "users": [{"name": "tester", "user": {"token": "not-checked"}}],
        "current-context": current or next(iter(contexts)),
    }
    path.write_text(json.dumps(config))
    return path


def api_client(url: str) -> kubernetes.client.ApiClient:
    """A plain client for ``url`` (the tests' own, to set status the way controllers do)."""
    configuration = kubernetes.client.Configuration()
    configuration.host = url
    configuration.retries = 0
    return kubernetes.client.ApiClient(configuration)
