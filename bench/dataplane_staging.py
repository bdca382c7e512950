"""Staging for ``bench.dataplane``: the real ``Stager`` copying one local input into moto S3 and into Azurite.

Backends, each in its own process on 127.0.0.1 so that this process's memory
is the stager's alone: moto in server mode (``moto_server_process``,
tests/support/aws.py) and Azurite's Blob service with its data in memory
(``running_azurite``, tests/support/azurite.py).

Two stagers, both as ``build_runtime`` builds them (controlplane/runtime/builder.py):
one for a local input with no recorded sha256 (a file an operator placed,
not an upload), which hashes the source before copying it, and one given the
upload's recorded sha256, as the runtime gives it for an input uploaded
through the API. Each run stages a new task's 1 GiB input (its ``target``
field) into each store with the first, then stages it again for another
attempt (found by HEAD, not copied: the source is still hashed first), and
once more with the second (one HEAD, no read of the source). The baseline,
in the same process and run: ``shutil.copyfile`` of the same bytes to a file
beside them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.memory import peak_rss, reset_peak, rss
from bench.signals import isolated_aws_environment
from controlplane.dataplane.stager import Stager
from controlplane.dataplane.stores import Stores, StoreSettings
from controlplane.domain import DataSensitivity, Task, TaskKind, TaskSpec, TaskState
from controlplane.domain.target_storage import StorageKind, TargetStorage
from controlplane.domain.tenant_storage import TenantStorage
from controlplane.store import new_id

__all__ = [
    "TENANT",
    "StageRun",
    "Stagers",
    "StagingTarget",
    "copy_baseline",
    "python_peak",
    "stage_input",
    "staging_targets",
]

TENANT = "bench"
_CONTAINER = "fp-bench"


@dataclass(frozen=True, kw_only=True)
class StageRun:
    """One copy of the input as measured."""

    store: str
    seconds: float
    size: int
    #: how far this process's peak resident memory rose above its size before the call
    peak_growth: int
    #: the stage call for the next attempt, with no recorded sha256 (the source hashed again) and with the upload's
    again_s: float = 0.0
    again_recorded_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class StagingTarget:
    """A target's store as the policy would name it, and the provider whose reach rules apply."""

    name: str
    provider: str
    storage: TargetStorage


@dataclass(frozen=True, kw_only=True)
class Stagers:
    """The stager for an input with no recorded sha256, the one given the upload's, and their stores."""

    unrecorded: Stager
    recorded: Stager
    stores: Stores


@contextlib.contextmanager
def staging_targets(
    *, inputs: Path, outputs: Path, recorded: Callable[[Path], str | None]
) -> Iterator[tuple[list[StagingTarget], Stagers]]:
    """moto S3 and Azurite started, a bucket and a container in each; the stagers that write there."""
    from tests.support.aws import moto_server_process
    from tests.support.azurite import ACCOUNT, running_azurite

    isolated_aws_environment()
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    with moto_server_process() as moto_url, running_azurite() as azurite:
        _create_bucket(moto_url)
        _create_container(azurite.connection_string)
        stores = Stores(StoreSettings(azure_connection_string=azurite.connection_string))
        folders = TenantStorage(input_roots=(inputs,), output_root=outputs)
        stagers = Stagers(
            unrecorded=Stager(stores=stores, tenant_storage=folders),
            recorded=Stager(stores=stores, tenant_storage=folders, recorded_sha256=recorded),
            stores=stores,
        )
        targets = [
            StagingTarget(
                name="moto S3",
                provider="aws",
                storage=TargetStorage(kind=StorageKind.S3, root=f"s3://{_CONTAINER}/aws/", endpoint_url=moto_url),
            ),
            StagingTarget(
                name="Azurite Blob",
                provider="azure",
                storage=TargetStorage(
                    kind=StorageKind.AZURE_BLOB,
                    root=f"az://{ACCOUNT}/{_CONTAINER}/azure/",
                    endpoint_url=azurite.endpoint,
                ),
            ),
        ]
        yield targets, stagers


def _create_bucket(endpoint: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=_CONTAINER)


def _create_container(connection_string: str) -> None:
    from azure.storage.blob import BlobServiceClient

    BlobServiceClient.from_connection_string(connection_string).create_container(_CONTAINER)


def _task(source: Path) -> Task:
    """A new video task whose target is the local input (staged) and whose source is a URL (not staged)."""
    now = datetime.now(UTC)
    spec = TaskSpec(
        tenant=TENANT,
        kind=TaskKind.VIDEO,
        source_uri="https://example.com/face.png",
        target_uri=str(source),
        output_uri=f"s3://{_CONTAINER}/out.mp4",
        data_sensitivity=DataSensitivity.PUBLIC,
    )
    return Task(id=new_id("tsk"), spec=spec, state=TaskState.LAUNCHING, created_at=now, updated_at=now)


def _stage(stager: Stager, task: Task, target: StagingTarget) -> tuple[float, bool]:
    """One ``Stager.stage`` call for a new attempt: its wall time, and whether bytes were copied."""
    started = time.perf_counter()
    staged = stager.stage(
        task,
        attempt_id=new_id("att"),
        target=target.name,
        provider=target.provider,
        storage=target.storage,
        private_target=False,
    )
    seconds = time.perf_counter() - started
    if [item.field for item in staged] != ["target"]:
        raise RuntimeError(f"expected the target input staged, got {staged}")
    return seconds, staged[0].copied


def stage_input(stagers: Stagers, target: StagingTarget, source: Path) -> StageRun:
    """Stage ``source`` for a new task (copied), then for two more attempts (found); the copy deleted after."""
    task = _task(source)
    before = rss()
    reset_peak()
    seconds, copied = _stage(stagers.unrecorded, task, target)
    growth = peak_rss() - before
    again_s, copied_again = _stage(stagers.unrecorded, task, target)
    recorded_s, copied_recorded = _stage(stagers.recorded, task, target)
    if (copied, copied_again, copied_recorded) != (True, False, False):
        raise RuntimeError(f"{target.name}: copied {copied}, then {copied_again} and {copied_recorded}")
    stagers.stores(target.storage).delete_prefix(target.storage.task_prefix(TENANT, task.id))
    return StageRun(
        store=target.name,
        seconds=seconds,
        size=source.stat().st_size,
        peak_growth=max(0, growth),
        again_s=again_s,
        again_recorded_s=recorded_s,
    )


def python_peak(stagers: Stagers, target: StagingTarget, source: Path) -> int:
    """The peak of Python's own allocations (tracemalloc) while ``source`` is staged once more, untimed.

    Apart from the timed runs because tracing every allocation slows them;
    the RSS growth those report also counts what Python reuses from its heap
    and what C code holds, this only what the copy allocates.
    """
    task = _task(source)
    tracemalloc.start()
    try:
        _stage(stagers.unrecorded, task, target)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stagers.stores(target.storage).delete_prefix(target.storage.task_prefix(TENANT, task.id))
    return peak


def copy_baseline(source: Path, folder: Path) -> StageRun:
    """``shutil.copyfile`` of the same bytes to a file beside them (no fsync, as copyfile does not)."""
    copy = folder / "copy.bin"
    before = rss()
    reset_peak()
    started = time.perf_counter()
    shutil.copyfile(source, copy)
    seconds = time.perf_counter() - started
    growth = peak_rss() - before
    copy.unlink()
    return StageRun(store="copyfile", seconds=seconds, size=source.stat().st_size, peak_growth=max(0, growth))
