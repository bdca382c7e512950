"""The providers a control plane launches on: the local one, and Kubernetes, EC2 Spot and Azure Spot.

Every cloud provider reads its targets from the policy in force (a callable,
so a hot reload that adds a target is used at the next launch) and builds
its SDK clients on first use, so one with no targets in the policy costs
nothing and needs no credentials.

Settings:

- ``FUSIONPLANE_WORKER_IMAGE``: the worker container on every backend (a
  target's ``settings.worker_image`` overrides it).
- ``FUSIONPLANE_WORKER_GPUS``: ``0`` for the CPU image (no ``--gpus all`` on VMs).
- ``FUSIONPLANE_OWNER``: the owner tag/label on every resource, what
  ``list_owned`` and reconciliation look for. Keep it stable across restarts
  and distinct per control-plane installation.
- ``FUSIONPLANE_AZURE_ARM_URL``: the ARM endpoint (default the public cloud's;
  tests point it at the fake). EC2 takes ``AWS_ENDPOINT_URL`` /
  ``AWS_ENDPOINT_URL_EC2``, which boto3 reads itself.

Credentials only through the standard chains: boto3's, azure-identity's
``DefaultAzureCredential``, and kubeconfig or in-cluster configuration.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from controlplane import __version__
from controlplane.domain import Target
from providers.base import Provider
from providers.bootstrap import WorkerImage

__all__ = ["DEFAULT_OWNER", "DEFAULT_WORKER_IMAGE", "cloud_providers"]

DEFAULT_WORKER_IMAGE = f"fusionplane-worker:{__version__}-gpu"
DEFAULT_OWNER = "fusionplane"


def cloud_providers(targets: Callable[[], Iterable[Target]]) -> dict[str, Provider]:
    """Kubernetes, AWS and Azure providers over the policy's targets, keyed by provider name."""
    from providers.aws import AwsSpotProvider
    from providers.azure import AzureSpotProvider
    from providers.kubernetes import KubernetesProvider

    image = WorkerImage(
        image=os.environ.get("FUSIONPLANE_WORKER_IMAGE") or DEFAULT_WORKER_IMAGE,
        gpus=os.environ.get("FUSIONPLANE_WORKER_GPUS", "1") != "0",
    )
    owner = os.environ.get("FUSIONPLANE_OWNER") or DEFAULT_OWNER
    return {
        "kubernetes": KubernetesProvider(targets, image=image, owner=owner),
        "aws": AwsSpotProvider(targets, image=image, owner=owner),
        "azure": AzureSpotProvider(
            targets, image=image, owner=owner, base_url=os.environ.get("FUSIONPLANE_AZURE_ARM_URL") or None
        ),
    }
