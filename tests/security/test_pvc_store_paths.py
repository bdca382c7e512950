"""A claim the control plane shares with workers: no URI, and no link a worker plants, leads it elsewhere.

Workers write into the same ReadWriteMany claim the control plane mounts,
so whatever lies on it is untrusted. The pvc store refuses ``..``, absolute
and empty segments before touching the disk, and refuses a path with a
symlink anywhere below the mount: one that leaves the claim (the control
plane's own files), and one that stays on it but points into another
tenant's folder (a staged input written over another tenant's output, or
retention deleting another tenant's checkpoint). Every refusal is a
``StoreError`` (never the ``ValueError`` of a sha256 mismatch) and nothing
outside is read, written or deleted.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from controlplane.dataplane.errors import StoreError
from controlplane.dataplane.pvc_store import PvcStore
from controlplane.dataplane.stores import Stores, StoreSettings

CLAIM = "fp-work"
DATA = b"attacker bytes"
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def mount(tmp_path: Path) -> Path:
    folder = tmp_path / "mnt" / "work"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """The control plane's own files, beside the mount."""
    folder = tmp_path / "var"
    folder.mkdir()
    (folder / "tokens.json").write_text("secret")
    return folder


@pytest.fixture
def store(mount: Path) -> PvcStore:
    made = Stores(StoreSettings(pvc_mounts={CLAIM: mount}))(f"pvc://{CLAIM}/")
    assert isinstance(made, PvcStore)
    return made


def every_call(store: PvcStore, uri: str) -> None:
    """Each operation on ``uri`` (as an object, and as a folder) must be refused."""
    folder = uri if uri.endswith("/") else f"{uri}/"
    calls = [
        lambda: store.put(uri, io.BytesIO(DATA), sha256=SHA, size=len(DATA)),
        lambda: store.head(uri),
        lambda: store.open_read(uri),
        lambda: list(store.list(folder)),
        lambda: store.delete_prefix(folder),
    ]
    for call in calls:
        with pytest.raises(StoreError) as refused:
            call()
        assert not refused.value.transient


@pytest.mark.parametrize(
    "rest",
    [
        "../escape.bin",
        "tasks/../../escape.bin",
        "tasks/acme/../../../var/tokens.json",
        "/etc/passwd",
        "tasks//acme/x",
        "tasks/./acme/x",
        "tasks/acme/x\x00.png",
    ],
)
def test_a_uri_that_climbs_or_is_not_plain_is_refused(store: PvcStore, mount: Path, outside: Path, rest: str) -> None:
    every_call(store, f"pvc://{CLAIM}/{rest}")

    assert not (mount.parent / "escape.bin").exists()
    assert (outside / "tokens.json").read_text() == "secret"


def test_another_claims_uri_is_refused(store: PvcStore) -> None:
    every_call(store, "pvc://fp-other/tasks/acme/t1/output.png")
    every_call(store, "/etc/passwd")


def test_a_link_out_of_the_claim_is_not_followed(store: PvcStore, mount: Path, outside: Path) -> None:
    task = mount / "tasks" / "evil" / "t1"
    task.mkdir(parents=True)
    (task / "output.png").symlink_to(outside / "tokens.json")
    (task / "inputs").symlink_to(outside, target_is_directory=True)

    every_call(store, f"pvc://{CLAIM}/tasks/evil/t1/output.png")
    every_call(store, f"pvc://{CLAIM}/tasks/evil/t1/inputs/source-x.png")
    every_call(store, f"pvc://{CLAIM}/tasks/evil/t1/inputs/")

    assert sorted(p.name for p in outside.iterdir()) == ["tokens.json"]
    assert (outside / "tokens.json").read_text() == "secret"


def test_a_link_into_another_tenants_folder_on_the_claim_is_not_followed(store: PvcStore, mount: Path) -> None:
    victim = mount / "tasks" / "acme" / "t9"
    (victim / "checkpoint").mkdir(parents=True)
    (victim / "output.png").write_bytes(b"acme's output")
    (victim / "checkpoint" / "seg-0001.ts").write_bytes(b"acme's segment")
    evil = mount / "tasks" / "evil" / "t1"
    (evil / "inputs").mkdir(parents=True)
    # the next staging of evil's task would write its input over acme's output ...
    (evil / "inputs" / "source-face.png").symlink_to(victim / "output.png")
    # ... and retention of a second task of evil's would empty acme's checkpoint
    (mount / "tasks" / "evil" / "t2").mkdir()
    (mount / "tasks" / "evil" / "t2" / "inputs").symlink_to(victim / "checkpoint", target_is_directory=True)

    every_call(store, f"pvc://{CLAIM}/tasks/evil/t1/inputs/source-face.png")
    every_call(store, f"pvc://{CLAIM}/tasks/evil/t2/inputs/")

    assert (victim / "output.png").read_bytes() == b"acme's output"
    assert (victim / "checkpoint" / "seg-0001.ts").read_bytes() == b"acme's segment"


def test_a_link_planted_higher_up_is_not_followed_either(store: PvcStore, mount: Path, outside: Path) -> None:
    (mount / "tasks").mkdir()
    (mount / "tasks" / "evil").symlink_to(outside, target_is_directory=True)

    every_call(store, f"pvc://{CLAIM}/tasks/evil/tokens.json")

    assert (outside / "tokens.json").read_text() == "secret"


def test_the_whole_claim_is_never_emptied(store: PvcStore, mount: Path) -> None:
    (mount / "tasks").mkdir()
    (mount / "tasks" / "keep.bin").write_bytes(b"1")

    with pytest.raises(StoreError, match="whole claim"):
        store.delete_prefix(f"pvc://{CLAIM}/")

    assert (mount / "tasks" / "keep.bin").exists()


def test_a_mount_reached_through_a_link_still_works(tmp_path: Path, mount: Path) -> None:
    """The operator's own mount path may be a link (``/mnt/work`` -> the volume); only links below it count."""
    link = tmp_path / "work-link"
    os.symlink(mount, link, target_is_directory=True)
    store = PvcStore(claim=CLAIM, mount=link)

    store.put(f"pvc://{CLAIM}/tasks/acme/t1/output.png", io.BytesIO(DATA), sha256=SHA, size=len(DATA))

    assert (mount / "tasks" / "acme" / "t1" / "output.png").read_bytes() == DATA
    assert [i.uri for i in store.list(f"pvc://{CLAIM}/tasks/")] == [f"pvc://{CLAIM}/tasks/acme/t1/output.png"]
