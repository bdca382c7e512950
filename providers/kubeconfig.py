"""One way to reach a cluster from a target's settings, shared by the provider and the capacity signal."""

from __future__ import annotations

import os

import kubernetes
from kubernetes.config.config_exception import ConfigException

__all__ = ["cluster_client"]


def cluster_client(kubeconfig: str | None, context: str | None) -> kubernetes.client.ApiClient:
    """An API client for (kubeconfig, context); neither given: in-cluster config, else the default kubeconfig.

    urllib3 retries a timed-out call 3 times by default (4 timeouts per
    call); callers retry on their own schedule, so retries are off.
    """
    config = kubernetes.client.Configuration()
    in_cluster = False
    if kubeconfig is None and context is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=config)
            in_cluster = True
        except ConfigException:
            pass  # not in a pod: the default kubeconfig
    if not in_cluster:
        # $KUBECONFIG read now, not when the kubernetes package was imported (its own default is)
        kubernetes.config.load_kube_config(
            config_file=kubeconfig or os.environ.get("KUBECONFIG") or None,
            context=context,
            client_configuration=config,
            persist_config=False,
        )
    config.retries = 0
    return kubernetes.client.ApiClient(config)
