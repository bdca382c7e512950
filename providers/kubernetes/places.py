"""Where this provider's Jobs live: (cluster, namespace) places, one client per cluster, and the attempts seen.

A place is one namespace of one cluster (a kubeconfig and context, or the
in-cluster config). ``status``, ``cancel`` and ``list_owned`` look in every
place the configured targets name, the one an attempt was last seen in first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from controlplane.domain import InvalidSpec, Target
from providers.common import BoundedMemory, ClientCache, own_targets
from providers.kubeconfig import cluster_client
from providers.kubernetes.settings import DEFAULT_NAMESPACE, cluster_key

__all__ = ["ApiClientFactory", "Place", "Places"]

log = logging.getLogger("fusionplane.providers.kubernetes")

ApiClientFactory = Callable[[Target], Any]


@dataclass(frozen=True)
class Place:
    """One namespace of one cluster where this provider's Jobs live."""

    cluster: tuple[str | None, str | None]
    namespace: str
    #: a target on that cluster (the client factory is asked with it)
    target: Target = field(compare=False, hash=False)

    def ref(self, name: str) -> str:
        """``context/namespace/name`` (``namespace/name`` without a context): the attempt's backend ref."""
        context = self.cluster[1]
        return f"{context}/{self.namespace}/{name}" if context else f"{self.namespace}/{name}"


class Places:
    """The kubernetes targets as places, one client per cluster, and where each attempt's Job was last seen.

    ``api_client_for(target)`` returns a client for a target's cluster; without
    it a client is built per (kubeconfig, context) and closed by :meth:`close`.
    ``memory`` bounds how many attempt ids are remembered.
    """

    provider = "kubernetes"

    def __init__(
        self,
        targets: Iterable[Target] | Callable[[], Iterable[Target]],
        *,
        api_client_for: ApiClientFactory | None,
        memory: int,
    ) -> None:
        self._targets = targets if callable(targets) else list(targets)
        self._factory = api_client_for
        self._clients: ClientCache[tuple[str | None, str | None], Any] = ClientCache()
        #: the clients built here, not injected: only these are ours to close
        self._built: list[Any] = []
        self._lock = threading.Lock()
        #: attempt id -> the place its Job was seen (looked at first)
        self._where: BoundedMemory[Place] = BoundedMemory(memory)

    def targets(self) -> list[Target]:
        """The configured kubernetes targets, now (a policy reload is seen)."""
        return own_targets(self._targets, self.provider)

    def target(self, name: str) -> Target:
        """The target called ``name``; ``InvalidSpec`` when none is configured."""
        for target in self.targets():
            if target.name == name:
                return target
        raise InvalidSpec(f"no kubernetes target named {name!r} is configured", target=name)

    def all(self) -> list[Place]:
        """Every (cluster, namespace) of the configured targets, each once."""
        seen: dict[Place, None] = {}
        for target in self.targets():
            try:
                namespace = target.settings.get("namespace") or DEFAULT_NAMESPACE
                seen.setdefault(Place(cluster_key(target), str(namespace), target), None)
            except InvalidSpec:
                log.warning("", extra={"event": "kubernetes_target_skipped", "target": target.name})
        return list(seen)

    def for_attempt(self, attempt_id: str) -> list[Place]:
        """Every place, the one the attempt was last seen in first."""
        places = self.all()
        remembered = self._where.get(attempt_id)
        if remembered in places:
            places.remove(remembered)
            places.insert(0, remembered)
        return places

    def remember(self, attempt_id: str, place: Place) -> None:
        """The attempt's Job was seen in ``place``."""
        with self._lock:
            self._where.put(attempt_id, place)

    def seen(self, attempt_id: str) -> bool:
        """Whether this provider ever saw the attempt's Job (or launched it)."""
        return attempt_id in self._where

    def client(self, place: Place) -> Any:
        """The ``kubernetes.client.ApiClient`` of the place's cluster, made on first use."""
        return self._clients.get(place.cluster, lambda _: self._make_client(place))

    def _make_client(self, place: Place) -> Any:
        if self._factory is not None:
            return self._factory(place.target)
        kubeconfig, context = place.cluster
        client = cluster_client(kubeconfig, context)
        with self._lock:
            self._built.append(client)
        return client

    def close(self) -> None:
        """Close the clients built here (injected ones belong to their owner)."""
        self._clients.close_all()
        with self._lock:
            built, self._built = self._built, []
        for client in built:
            client.close()
