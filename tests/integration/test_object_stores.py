"""The ObjectStore contract, proved by every store: the local disk, and S3 through boto3 against moto in server mode.

One suite (:class:`StoreContract`), subclassed per store, as the provider
contract is. moto runs on 127.0.0.1 (one server per module); nothing in boto3
is patched. moto keeps user metadata (the sha256) and multipart uploads as S3
does; it does not check a presigned URL's expiry, so the S3 tests check the
expiry the URL carries (``X-Amz-Expires``) and that the URL reads the object.
"""

from __future__ import annotations

import hashlib
import io
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest

from controlplane.dataplane.errors import StoreError
from controlplane.dataplane.local_store import LocalStore
from controlplane.dataplane.objects import ObjectStore
from controlplane.dataplane.pvc_store import PvcStore
from controlplane.dataplane.s3_store import S3Store
from controlplane.dataplane.stores import Stores, StoreSettings, open_store
from controlplane.domain.target_storage import StorageKind, TargetStorage
from tests.support.aws import isolate_aws_environment, moto_server, moto_server_process

pytestmark = pytest.mark.timeout(60)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Reader(io.RawIOBase):
    """A source that hands out at most ``chunk`` bytes a read and remembers the largest read asked for."""

    def __init__(self, data: bytes, chunk: int = 1 << 16) -> None:
        self._data, self._at, self._chunk = data, 0, chunk
        self.largest = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.largest = max(self.largest, size)
        size = len(self._data) if size is None or size < 0 else size
        out = self._data[self._at : self._at + min(size, self._chunk)]
        self._at += len(out)
        return out


class StoreContract:
    """What every ObjectStore does; subclasses give ``store`` and ``root`` (a folder URI ending in ``/``)."""

    @pytest.fixture
    def store(self) -> ObjectStore:
        raise NotImplementedError

    @pytest.fixture
    def root(self) -> str:
        raise NotImplementedError

    def test_put_then_head_read_and_list(self, store: ObjectStore, root: str) -> None:
        data = b"face bytes " * 1000
        info = store.put(f"{root}a/in.png", io.BytesIO(data), sha256=digest(data), size=len(data))
        assert (info.size, info.sha256) == (len(data), digest(data))
        head = store.head(f"{root}a/in.png")
        assert head is not None
        assert head.size == len(data)
        assert head.sha256 in (digest(data), None)  # a local file system without xattrs keeps no digest
        assert b"".join(store.open_read(f"{root}a/in.png")) == data
        assert b"".join(store.open_read(f"{root}a/in.png", start=5, end=15)) == data[5:15]
        assert b"".join(store.open_read(f"{root}a/in.png", start=len(data) - 3)) == data[-3:]
        assert [item.uri for item in store.list(root)] == [f"{root}a/in.png"]
        assert store.head(f"{root}a/missing.png") is None

    def test_a_mismatched_sha256_leaves_nothing(self, store: ObjectStore, root: str) -> None:
        data = b"x" * 70_000
        with pytest.raises(ValueError, match="sha256"):
            store.put(f"{root}bad.bin", _Reader(data), sha256=digest(b"other"), size=len(data))
        assert store.head(f"{root}bad.bin") is None
        assert list(store.list(root)) == []

    def test_a_source_shorter_or_longer_than_promised_leaves_nothing(self, store: ObjectStore, root: str) -> None:
        data = b"y" * 10_000
        with pytest.raises(ValueError, match=r"sha256|ended|more than"):
            store.put(f"{root}short.bin", io.BytesIO(data[:-1]), sha256=digest(data), size=len(data))
        with pytest.raises(ValueError, match=r"sha256|more than"):
            store.put(f"{root}long.bin", io.BytesIO(data + b"!"), sha256=digest(data), size=len(data))
        assert list(store.list(root)) == []

    def test_a_put_replaces_the_object_whole(self, store: ObjectStore, root: str) -> None:
        old, new = b"old" * 100, b"new!" * 300
        store.put(f"{root}o.bin", io.BytesIO(old), sha256=digest(old), size=len(old))
        store.put(f"{root}o.bin", io.BytesIO(new), sha256=digest(new), size=len(new))
        assert b"".join(store.open_read(f"{root}o.bin")) == new
        # a failed replacement leaves the object as it was, never half of the new bytes
        with pytest.raises(ValueError, match="sha256"):
            store.put(f"{root}o.bin", _Reader(old * 300), sha256=digest(new), size=len(old) * 300)
        assert b"".join(store.open_read(f"{root}o.bin")) == new

    def test_delete_prefix_removes_only_that_prefix(self, store: ObjectStore, root: str) -> None:
        for key in ("t1/inputs/a", "t1/inputs/b", "t1/output.png", "t2/inputs/a"):
            store.put(f"{root}{key}", io.BytesIO(b"1"), sha256=digest(b"1"), size=1)
        assert store.delete_prefix(f"{root}t1/inputs/") == 2
        assert sorted(item.uri for item in store.list(root)) == [f"{root}t1/output.png", f"{root}t2/inputs/a"]
        assert store.delete_prefix(f"{root}nothing/") == 0


class TestLocalStore(StoreContract):
    @pytest.fixture
    def store(self) -> ObjectStore:
        return LocalStore()

    @pytest.fixture
    def root(self, tmp_path: Path) -> str:
        return f"{tmp_path}/store/"

    def test_presign_is_none_and_no_partial_files_stay(self, store: ObjectStore, root: str) -> None:
        assert store.presign(f"{root}x", seconds=60) is None
        with pytest.raises(ValueError, match="sha256"):
            store.put(f"{root}x.bin", io.BytesIO(b"abc"), sha256=digest(b"abd"), size=3)
        assert [p.name for p in Path(root).iterdir()] == []

    def test_relative_paths_and_nul_are_refused(self, store: ObjectStore) -> None:
        for uri in ("relative/x.bin", "/tmp/a\x00b"):
            with pytest.raises(ValueError, match="absolute local path"):
                store.head(uri)


class TestPvcStore(StoreContract):
    """A claim as the control plane mounts it (``FUSIONPLANE_PVC_MOUNTS``): a folder here, URIs ``pvc://``."""

    @pytest.fixture
    def mount(self, tmp_path: Path) -> Path:
        folder = tmp_path / "mnt" / "work"
        folder.mkdir(parents=True)
        return folder

    @pytest.fixture
    def store(self, mount: Path) -> ObjectStore:
        return Stores(StoreSettings(pvc_mounts={"fp-work": mount}))("pvc://fp-work/")

    @pytest.fixture
    def root(self) -> str:
        return "pvc://fp-work/tasks/"

    def test_objects_are_files_under_the_mount_and_no_link_is_handed_out(
        self, store: ObjectStore, root: str, mount: Path
    ) -> None:
        store.put(f"{root}acme/t1/output.png", io.BytesIO(b"px"), sha256=digest(b"px"), size=2)
        assert (mount / "tasks" / "acme" / "t1" / "output.png").read_bytes() == b"px"
        # what a worker wrote there (under its own mount_path) is an object too
        (mount / "tasks" / "acme" / "t1" / "checkpoint").mkdir()
        (mount / "tasks" / "acme" / "t1" / "checkpoint" / "manifest.json").write_text("{}")
        assert sorted(item.uri for item in store.list(f"{root}acme/t1/")) == [
            f"{root}acme/t1/checkpoint/manifest.json",
            f"{root}acme/t1/output.png",
        ]
        assert store.presign(f"{root}acme/t1/output.png", seconds=60) is None

    def test_a_mount_that_is_gone_is_a_store_error(self, tmp_path: Path) -> None:
        store = PvcStore(claim="fp-work", mount=tmp_path / "not-mounted")
        with pytest.raises(StoreError, match="reading") as refused:
            store.open_read("pvc://fp-work/tasks/x.png")
        assert not refused.value.transient
        assert store.head("pvc://fp-work/tasks/x.png") is None


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def s3_env(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    isolate_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # credentials from this test's environment
    return moto_url


def new_bucket(moto_url: str) -> tuple[Any, str]:
    client = boto3.client("s3", endpoint_url=moto_url)
    bucket = f"fp-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


class TestS3Store(StoreContract):
    @pytest.fixture
    def bucket(self, s3_env: str) -> tuple[Any, str]:
        return new_bucket(s3_env)

    @pytest.fixture
    def store(self, s3_env: str) -> ObjectStore:
        # the smallest part S3 takes, so the multipart path runs on a few MiB
        return S3Store(endpoint_url=s3_env, part_bytes=5 << 20)

    @pytest.fixture
    def root(self, bucket: tuple[Any, str]) -> str:
        return f"s3://{bucket[1]}/work/"

    def test_sha256_travels_as_metadata(self, store: ObjectStore, root: str, bucket: tuple[Any, str]) -> None:
        client, name = bucket
        store.put(f"{root}m.bin", io.BytesIO(b"abc"), sha256=digest(b"abc"), size=3)
        assert client.head_object(Bucket=name, Key="work/m.bin")["Metadata"] == {"sha256": digest(b"abc")}

    def test_a_multipart_upload_streams_and_a_mismatch_aborts_it(
        self, store: ObjectStore, root: str, bucket: tuple[Any, str]
    ) -> None:
        client, name = bucket
        data = bytes(range(256)) * (12 << 12)  # 12 MiB: three parts of 5 MiB
        reader = _Reader(data)
        store.put(f"{root}big.bin", reader, sha256=digest(data), size=len(data))
        assert reader.largest <= 5 << 20  # read a part at a time, never the whole
        assert client.head_object(Bucket=name, Key="work/big.bin")["ContentLength"] == len(data)
        with pytest.raises(ValueError, match="sha256"):
            store.put(f"{root}big2.bin", _Reader(data), sha256=digest(b"no"), size=len(data))
        assert store.head(f"{root}big2.bin") is None
        assert client.list_multipart_uploads(Bucket=name).get("Uploads", []) == []  # aborted, none left open

    def test_presigned_url_reads_the_object_and_carries_its_expiry(self, store: ObjectStore, root: str) -> None:
        store.put(f"{root}out.png", io.BytesIO(b"pixels"), sha256=digest(b"pixels"), size=6)
        url = store.presign(f"{root}out.png", seconds=120)
        assert url is not None
        query = parse_qs(urlsplit(url).query)
        assert query["X-Amz-Expires"] == ["120"]
        assert "X-Amz-Signature" in query
        answer = httpx.get(url)
        assert (answer.status_code, answer.content) == (200, b"pixels")


def test_fifty_mib_stages_in_bounded_memory(s3_env: str, tmp_path: Path) -> None:
    """Writing 50 MiB from a file never holds it all: the peak of this process's Python allocations stays near
    one part (8 MiB) and its copies. moto runs in its own process here, so its copy of the object is not counted."""
    path = tmp_path / "clip.mp4"
    chunk = bytes(range(256)) * 4096  # 1 MiB
    with path.open("wb") as handle:
        for _ in range(50):
            handle.write(chunk)
    sha = hashlib.sha256(chunk * 50).hexdigest()
    with moto_server_process() as url:
        _client, bucket = new_bucket(url)
        store = S3Store(endpoint_url=url)
        tracemalloc.start()
        try:
            with path.open("rb") as handle:
                store.put(f"s3://{bucket}/clip.mp4", handle, sha256=sha, size=50 << 20)
            _now, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        head = store.head(f"s3://{bucket}/clip.mp4")
    assert peak < 32 << 20, f"peak {peak / (1 << 20):.1f} MiB"
    assert head is not None
    assert (head.size, head.sha256) == (50 << 20, sha)


def test_open_store_by_kind_and_scheme(s3_env: str) -> None:
    assert isinstance(open_store("/var/x"), LocalStore)
    assert isinstance(open_store("file"), LocalStore)
    assert isinstance(open_store("s3"), S3Store)
    stores = Stores()
    minio = TargetStorage(kind=StorageKind.S3, root="s3://b/p/", endpoint_url=s3_env)
    assert stores(minio) is stores(minio)
    assert stores(minio) is not stores("s3://b/x")  # another endpoint, another client

    # a claim this control plane does not mount (FUSIONPLANE_PVC_MOUNTS) cannot be served
    with pytest.raises(StoreError, match="FUSIONPLANE_PVC_MOUNTS"):
        open_store(TargetStorage(kind=StorageKind.PVC, root="pvc://claim/p/", mount_path="/data"))
    with pytest.raises(StoreError, match="gopher"):
        open_store("gopher://x/y")
