"""The providers a control plane launches on: the local one, and Kubernetes, EC2 Spot and Azure Spot.

Every cloud provider reads its targets from the policy in force (a callable,
so a hot reload that adds a target is used at the next launch) and builds
its SDK clients on first use, so one with no targets in the policy costs
nothing and needs no credentials. What they launch and how they tag it comes
from :class:`controlplane.config.CloudSettings`.

Credentials only through the standard chains: boto3's, azure-identity's
``DefaultAzureCredential``, and kubeconfig or in-cluster configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from controlplane.config import CloudSettings, Settings
from controlplane.domain import Target
from faceswap.errors import ModelError
from faceswap.modelfill import read_fill_manifest
from providers.base import Provider
from providers.bootstrap import WorkerImage
from providers.local import LocalProvider

__all__ = ["cloud_providers", "local_provider", "models_manifest_text"]


def cloud_providers(targets: Callable[[], Iterable[Target]], *, clouds: CloudSettings) -> dict[str, Provider]:
    """Kubernetes, AWS and Azure providers over the policy's targets, keyed by provider name."""
    from providers.aws import AwsSpotProvider
    from providers.azure import AzureSpotProvider
    from providers.kubernetes import KubernetesProvider

    image = WorkerImage(
        image=clouds.worker_image, gpus=clouds.worker_gpus, models_manifest=models_manifest_text(clouds.models_manifest)
    )
    return {
        "kubernetes": KubernetesProvider(targets, image=image, owner=clouds.owner),
        "aws": AwsSpotProvider(targets, image=image, owner=clouds.owner),
        "azure": AzureSpotProvider(targets, image=image, owner=clouds.owner, base_url=clouds.azure_arm_url),
    }


def models_manifest_text(path: Path | None) -> str | None:
    """The models manifest VMs fill their cache from, checked as ``fusionctl models fill`` will read it.

    Read once, at start: a VM gets the manifest the control plane started
    with, inside its user data. Raises ValueError saying what is wrong, so a
    bad file stops ``serve`` rather than every VM's fill.
    """
    if path is None:
        return None
    try:
        read_fill_manifest(path, Path("/models"))
    except ModelError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return path.read_text(encoding="utf-8")


def local_provider(settings: Settings) -> LocalProvider:
    """The local provider: ``local_slots`` workers on this machine, their state under ``var/local-provider``."""
    return LocalProvider(
        state_dir=settings.var_dir / "local-provider",
        slots=settings.local_slots,
        worker_command=list(settings.local_worker_command) or None,
        pass_env=settings.local_worker_env,
        warm=settings.local_warm_worker,
    )
