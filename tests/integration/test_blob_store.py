"""The control plane's Blob store (``controlplane/dataplane/blob_store.py``) against Azurite, the real SDK unpatched.

The same behaviour the ObjectStore contract asks of every store (put, head,
ranged reads, list, delete_prefix, a checksum mismatch leaving nothing), plus
what only Blob storage does here: blocks staged one at a time and committed
only after the check, and a read-only SAS that plain HTTP can use until it
expires, for that blob only.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import httpx
import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from controlplane.dataplane.blob_store import BlobStore, open_blob_store
from controlplane.dataplane.errors import StoreError
from controlplane.dataplane.objects import ObjectStore
from tests.support.azurite import ACCOUNT, Azurite, EntraTokens
from tests.support.loopback import free_port

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

    def read(self, size: int | None = -1) -> bytes:
        self.largest = max(self.largest, size or 0)
        size = len(self._data) if size is None or size < 0 else size
        out = self._data[self._at : self._at + min(size, self._chunk)]
        self._at += len(out)
        return out


class _Settings:
    def __init__(self, connection_string: str | None) -> None:
        self.azure_connection_string = connection_string


@pytest.fixture
def container(azurite: Azurite) -> ContainerClient:
    client = BlobServiceClient.from_connection_string(azurite.connection_string)
    return client.create_container(f"fp-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def store(azurite: Azurite) -> BlobStore:
    # small blocks, so the staged-blocks path runs on a few hundred KiB
    return BlobStore(connection_string=azurite.connection_string, block_bytes=64 << 10)


@pytest.fixture
def root(container: ContainerClient) -> str:
    return f"az://{ACCOUNT}/{container.container_name}/work/"


def test_put_then_head_read_and_list(store: ObjectStore, root: str) -> None:
    data = b"face bytes " * 1000
    info = store.put(f"{root}a/in.png", io.BytesIO(data), sha256=digest(data), size=len(data))
    assert (info.size, info.sha256) == (len(data), digest(data))
    head = store.head(f"{root}a/in.png")
    assert head is not None
    assert (head.size, head.sha256) == (len(data), digest(data))
    assert b"".join(store.open_read(f"{root}a/in.png")) == data
    assert b"".join(store.open_read(f"{root}a/in.png", start=5, end=15)) == data[5:15]
    assert b"".join(store.open_read(f"{root}a/in.png", start=len(data) - 3)) == data[-3:]
    assert b"".join(store.open_read(f"{root}a/in.png", start=7, end=7)) == b""
    assert [(item.uri, item.sha256) for item in store.list(root)] == [(f"{root}a/in.png", digest(data))]
    assert store.head(f"{root}a/missing.png") is None


def test_sha256_travels_as_metadata(store: ObjectStore, root: str, container: ContainerClient) -> None:
    store.put(f"{root}m.bin", io.BytesIO(b"abc"), sha256=digest(b"abc"), size=3)
    assert container.get_blob_client("work/m.bin").get_blob_properties().metadata == {"sha256": digest(b"abc")}
    store.put(f"{root}empty.bin", io.BytesIO(b""), sha256=digest(b""), size=0)
    assert b"".join(store.open_read(f"{root}empty.bin")) == b""


def test_blocks_are_read_one_at_a_time_and_committed_once(
    store: ObjectStore, root: str, container: ContainerClient
) -> None:
    data = bytes(range(256)) * 1024  # 256 KiB: four blocks of 64 KiB
    reader = _Reader(data)
    store.put(f"{root}big.bin", reader, sha256=digest(data), size=len(data))
    assert reader.largest <= 64 << 10
    committed, uncommitted = container.get_blob_client("work/big.bin").get_block_list("all")
    assert (len(committed), len(uncommitted)) == (4, 0)
    assert b"".join(store.open_read(f"{root}big.bin")) == data


def test_a_mismatched_sha256_leaves_nothing(store: ObjectStore, root: str, container: ContainerClient) -> None:
    data = b"x" * 200_000  # several blocks staged before the mismatch shows
    with pytest.raises(ValueError, match="sha256"):
        store.put(f"{root}bad.bin", _Reader(data), sha256=digest(b"other"), size=len(data))
    assert store.head(f"{root}bad.bin") is None
    assert list(store.list(root)) == []
    assert list(container.list_blobs()) == []


def test_a_source_shorter_or_longer_than_promised_leaves_nothing(store: ObjectStore, root: str) -> None:
    data = b"y" * 10_000
    with pytest.raises(ValueError, match="ended"):
        store.put(f"{root}short.bin", io.BytesIO(data[:-1]), sha256=digest(data), size=len(data))
    with pytest.raises(ValueError, match="more than"):
        store.put(f"{root}long.bin", io.BytesIO(data + b"!"), sha256=digest(data), size=len(data))
    assert list(store.list(root)) == []


def test_a_failed_replacement_leaves_the_old_blob_whole(store: ObjectStore, root: str) -> None:
    old, new = b"old" * 100, b"new!" * 300
    store.put(f"{root}o.bin", io.BytesIO(old), sha256=digest(old), size=len(old))
    store.put(f"{root}o.bin", io.BytesIO(new), sha256=digest(new), size=len(new))
    assert b"".join(store.open_read(f"{root}o.bin")) == new
    with pytest.raises(ValueError, match="sha256"):
        store.put(f"{root}o.bin", _Reader(old * 1000), sha256=digest(new), size=len(old) * 1000)
    assert b"".join(store.open_read(f"{root}o.bin")) == new
    head = store.head(f"{root}o.bin")
    assert head is not None
    assert head.sha256 == digest(new)


def test_delete_prefix_removes_only_that_prefix(store: ObjectStore, root: str) -> None:
    for key in ("t1/inputs/a", "t1/inputs/b", "t1/output.png", "t2/inputs/a", "t1/inputs-old/a"):
        store.put(f"{root}{key}", io.BytesIO(b"1"), sha256=digest(b"1"), size=1)
    assert store.delete_prefix(f"{root}t1/inputs/") == 2
    assert sorted(item.uri for item in store.list(root)) == [
        f"{root}t1/inputs-old/a",
        f"{root}t1/output.png",
        f"{root}t2/inputs/a",
    ]
    assert store.delete_prefix(f"{root}nothing/") == 0
    for not_a_folder in (f"{root}t1/output.png", root.rsplit("/", 2)[0] + "/"):
        with pytest.raises(ValueError, match="folder"):
            store.delete_prefix(not_a_folder)


# --------------------------------------------------------------------------- presigned URLs


def test_a_presigned_url_reads_the_blob_over_plain_http(store: ObjectStore, root: str) -> None:
    store.put(f"{root}out.png", io.BytesIO(b"pixels"), sha256=digest(b"pixels"), size=6)
    url = store.presign(f"{root}out.png", seconds=120)
    assert url is not None
    answer = httpx.get(url)
    assert (answer.status_code, answer.content) == (200, b"pixels")
    assert "sp=r&" in url or url.endswith("sp=r")  # read only
    assert httpx.put(url, content=b"overwritten", headers={"x-ms-blob-type": "BlockBlob"}).status_code == 403
    assert httpx.get(url.split("?")[0]).status_code in (401, 403, 404)  # without the token: nothing


def test_a_presigned_url_reads_no_other_blob(store: ObjectStore, root: str) -> None:
    store.put(f"{root}out.png", io.BytesIO(b"mine"), sha256=digest(b"mine"), size=4)
    store.put(f"{root}other.png", io.BytesIO(b"theirs"), sha256=digest(b"theirs"), size=6)
    url = store.presign(f"{root}out.png", seconds=120)
    assert url is not None
    path, query = url.split("?", 1)
    assert httpx.get(f"{path.replace('out.png', 'other.png')}?{query}").status_code == 403


def test_an_expired_presigned_url_is_refused(azurite: Azurite, root: str) -> None:
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    store = BlobStore(connection_string=azurite.connection_string, clock=lambda: an_hour_ago)
    store.put(f"{root}out.png", io.BytesIO(b"pixels"), sha256=digest(b"pixels"), size=6)
    url = store.presign(f"{root}out.png", seconds=60)  # valid for a minute, an hour ago
    assert url is not None
    assert httpx.get(url).status_code == 403


# --------------------------------------------------------------------------- errors and wiring


def test_a_missing_container_is_a_permanent_store_error(store: ObjectStore) -> None:
    with pytest.raises(StoreError) as caught:
        store.put(f"az://{ACCOUNT}/no-such-container/x.bin", io.BytesIO(b"1"), sha256=digest(b"1"), size=1)
    assert not caught.value.transient
    assert "ContainerNotFound" in str(caught.value)


def test_a_wrong_key_is_a_permanent_store_error(azurite: Azurite, root: str) -> None:
    wrong = azurite.connection_string.replace(azurite.key, "d3Jvbmcga2V5" * 8)
    with pytest.raises(StoreError) as caught:
        BlobStore(connection_string=wrong).head(f"{root}x.bin")
    assert not caught.value.transient
    assert azurite.key not in str(caught.value)


def test_nothing_listening_is_a_transient_store_error(azurite: Azurite, root: str) -> None:
    dead = BlobStore(
        endpoint_url=f"http://127.0.0.1:{free_port()}/{ACCOUNT}", connection_string=azurite.connection_string
    )
    with pytest.raises(StoreError) as caught:
        dead.head(f"{root}x.bin")
    assert caught.value.transient


def test_uris_outside_the_blob_rules_are_refused(store: ObjectStore) -> None:
    for uri in (
        f"az://{ACCOUNT}/work/../other/x.bin",
        f"az://{ACCOUNT}/work/a%2Fb.bin",
        f"az://{ACCOUNT}/work/x.bin?sv=2020&sig=abc",
        f"az://{ACCOUNT}/work/",
        "s3://bucket/key",
    ):
        with pytest.raises(ValueError):  # noqa: PT011 (each case has its own message)
            store.head(uri)


def test_the_stores_hook_builds_a_store_for_a_targets_endpoint(azurite: Azurite, root: str) -> None:
    store = open_blob_store(endpoint_url=azurite.endpoint, settings=_Settings(azurite.connection_string))
    store.put(f"{root}hook.bin", io.BytesIO(b"1"), sha256=digest(b"1"), size=1)
    assert [item.uri for item in store.list(root)] == [f"{root}hook.bin"]


def test_without_a_key_a_user_delegation_sas_is_signed(azurite_oauth: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    """The managed-identity path: a bearer token writes, and a user delegation key the service issues signs a
    read-only SAS for that blob alone.

    Reading through it is not proved here: SDK 12.31 signs user delegation SAS
    in a newer format (two more lines) than Azurite 3.35 (API 2025-11-05)
    checks, so the emulator refuses every such signature; the account-key SAS
    above is read over plain HTTP.
    """
    assert azurite_oauth.ca_path is not None
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(azurite_oauth.ca_path))  # the SDK's transport trusts the test CA
    name = f"fp-{uuid.uuid4().hex[:12]}"
    BlobServiceClient.from_connection_string(azurite_oauth.connection_string).create_container(name)
    store = BlobStore(endpoint_url=azurite_oauth.endpoint, credential=EntraTokens())
    root = f"az://{ACCOUNT}/{name}/work/"
    store.put(f"{root}out.png", io.BytesIO(b"pixels"), sha256=digest(b"pixels"), size=6)
    head = store.head(f"{root}out.png")
    assert head is not None
    assert head.sha256 == digest(b"pixels")
    url = store.presign(f"{root}out.png", seconds=120)
    assert url is not None
    path, query = url.split("?", 1)
    assert path == f"{azurite_oauth.endpoint}/{name}/work/out.png"
    fields = parse_qs(query)
    # signed by a key the service issued to this identity, not by an account key
    assert (fields["skoid"], fields["sktid"]) == ([EntraTokens.OBJECT_ID], [EntraTokens.TENANT])
    assert (fields["sp"], fields["sr"]) == (["r"], ["b"])  # read, one blob
    starts, expires = (datetime.fromisoformat(fields[k][0].replace("Z", "+00:00")) for k in ("st", "se"))
    assert timedelta(seconds=110) <= expires - datetime.now(UTC) <= timedelta(seconds=130)
    assert starts < datetime.now(UTC)
    assert fields["sig"]
