"""The control plane's side of a ``pvc`` store: ``FUSIONPLANE_PVC_MOUNTS`` and the store each claim gets.

The setting says where this control plane mounts each ReadWriteMany claim;
``open_store``/``Stores`` serve ``pvc://<claim>/<path>`` from
``<mount>/<path>`` there, one store per claim, and refuse a claim with no
mount, naming the setting. (The store's own behaviour is the ObjectStore
contract in tests/integration/test_object_stores.py; its path guards are in
tests/security/test_pvc_store_paths.py.)
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from controlplane.config import Settings
from controlplane.dataplane.errors import StoreError
from controlplane.dataplane.pvc_store import PvcStore, claim_of, is_claim_name
from controlplane.dataplane.stores import Stores, StoreSettings, open_store
from controlplane.domain.target_storage import StorageKind, TargetStorage, output_uri

VARIABLE = "FUSIONPLANE_PVC_MOUNTS"
WORK = TargetStorage(kind=StorageKind.PVC, root="pvc://fp-work/tasks/", mount_path="/mnt/work")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)


# -- the setting ---------------------------------------------------------------------------------


def test_no_mounts_by_default() -> None:
    assert Settings.from_env().pvc_mounts == {}


def test_mounts_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VARIABLE, " fp-work=/mnt/work/ , fp.shared.v2=/srv/shared,")

    assert Settings.from_env().pvc_mounts == {"fp-work": Path("/mnt/work"), "fp.shared.v2": Path("/srv/shared")}


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("fp-work", "is not claim=/mount/path"),
        ("fp-work=", "is not claim=/mount/path"),
        ("=/mnt/work", "is not claim=/mount/path"),
        ("FP_Work=/mnt/work", "is not a PersistentVolumeClaim name"),
        ("fp..work=/mnt/work", "is not a PersistentVolumeClaim name"),
        ("fp-work=mnt/work", "absolute path other than /"),
        ("fp-work=/", "absolute path other than /"),
        ("fp-work=/mnt/../etc", "absolute path other than /"),
        ("fp-work=/mnt//work", "absolute path other than /"),
        ("fp-work=/mnt/a,fp-work=/mnt/b", "named twice"),
        ("fp-a=/mnt/work,fp-b=/mnt/work/", "named for two claims"),
    ],
)
def test_a_bad_mount_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch, value: str, why: str) -> None:
    monkeypatch.setenv(VARIABLE, value)

    with pytest.raises(ValueError, match=why) as refused:
        Settings.from_env()

    assert str(refused.value).startswith(f"{VARIABLE}: ")


def test_claim_names() -> None:
    longest = ".".join(["a" * 63] * 3 + ["a" * 61])  # 253 characters, each label at most 63
    for good in ("fp-work", "fp.work.v2", "0", longest):
        assert is_claim_name(good), good
    for bad in ("", "FP", "fp_work", "-fp", "fp-", "fp..work", ".fp", f"{longest}a", "a" * 64, "fp/work"):
        assert not is_claim_name(bad), bad
    assert claim_of("pvc://fp-work/tasks/x") == "fp-work"
    assert claim_of("s3://fp-work/tasks/x") is None


# -- the store each claim gets --------------------------------------------------------------------


def test_a_mounted_claim_is_served_from_its_mount(tmp_path: Path) -> None:
    stores = Stores(StoreSettings(pvc_mounts={"fp-work": tmp_path}))
    uri = output_uri(WORK, tenant="acme", task_id="t1", like=("out.png",))

    store = stores(WORK)
    store.put(uri, io.BytesIO(b"pixels"), sha256=_sha256(b"pixels"), size=6)

    assert isinstance(store, PvcStore)
    assert (tmp_path / "tasks" / "acme" / "t1" / "output.png").read_bytes() == b"pixels"
    # the same claim, named by a target's storage or by one of its URIs, is one store
    assert stores(uri) is store
    assert isinstance(open_store(uri, StoreSettings(pvc_mounts={"fp-work": tmp_path})), PvcStore)


def test_each_claim_gets_its_own_store(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    stores = Stores(StoreSettings(pvc_mounts={"fp-a": tmp_path / "a", "fp-b": tmp_path / "b"}))

    first, second = stores("pvc://fp-a/x"), stores("pvc://fp-b/x")

    assert first is not second
    with pytest.raises(StoreError, match="not on claim 'fp-a'"):
        first.head("pvc://fp-b/x")


def test_a_claim_without_a_mount_is_refused_naming_the_setting(tmp_path: Path) -> None:
    stores = Stores(StoreSettings(pvc_mounts={"fp-other": tmp_path}))

    for where in (WORK, "pvc://fp-work/tasks/acme/t1/output.png"):
        with pytest.raises(StoreError, match=f"claim 'fp-work' is not mounted.*{VARIABLE}") as refused:
            stores(where)
        assert not refused.value.transient
    with pytest.raises(StoreError, match=VARIABLE):
        open_store(WORK)  # no settings: no mounts
    with pytest.raises(StoreError, match="by its claim"):
        open_store("pvc")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
