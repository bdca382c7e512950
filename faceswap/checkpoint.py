"""Where finished video segments are committed so a preempted job resumes.

A checkpoint location is a local directory, an ``s3://bucket/prefix`` or an
``az://account/container/prefix``. It holds one encoded file per finished
segment and ``manifest.json``. The order of writes makes a crash at any
instant safe: a segment file is published first (rename, a completed S3
upload, a committed blob), the manifest that names it second.
A segment on disk that the manifest does not name is simply redone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from faceswap import blob
from faceswap.access import AzPath, split_az
from faceswap.errors import BadInput
from faceswap.uris import parse_uri, remote_errors, s3_client

__all__ = ["CheckpointStore", "Manifest", "open_checkpoint"]

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclass
class Manifest:
    """What is finished: the job fingerprint and the committed segments."""

    fingerprint: dict[str, Any]
    segment_frames: int
    segments: dict[int, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": MANIFEST_VERSION,
                "fingerprint": self.fingerprint,
                "segment_frames": self.segment_frames,
                "segments": {str(k): v for k, v in sorted(self.segments.items())},
            },
            indent=1,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest | None:
        try:
            raw = json.loads(text)
            if raw.get("version") != MANIFEST_VERSION:
                return None
            return cls(
                fingerprint=dict(raw["fingerprint"]),
                segment_frames=int(raw["segment_frames"]),
                segments={int(k): dict(v) for k, v in raw["segments"].items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # unreadable: treated as no checkpoint, the job starts over


class CheckpointStore(Protocol):
    uri: str

    def read_manifest(self) -> Manifest | None: ...
    def write_manifest(self, manifest: Manifest) -> None: ...
    def put_segment(self, name: str, local: Path) -> None: ...
    def get_segment(self, name: str, dest: Path) -> None: ...


class LocalCheckpoint:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = str(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"cannot create {root}: {exc.strerror}", field="checkpoint") from exc

    def _publish(self, data_path: Path, name: str) -> None:
        with data_path.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(data_path, self.root / name)

    def read_manifest(self) -> Manifest | None:
        path = self.root / MANIFEST
        return Manifest.from_json(path.read_text(encoding="utf-8")) if path.is_file() else None

    def write_manifest(self, manifest: Manifest) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".manifest.", dir=self.root)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(manifest.to_json())
        self._publish(Path(tmp), MANIFEST)

    def put_segment(self, name: str, local: Path) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.root)
        os.close(fd)
        shutil.copyfile(local, tmp)
        self._publish(Path(tmp), name)

    def get_segment(self, name: str, dest: Path) -> None:
        shutil.copyfile(self.root / name, dest)


class S3Checkpoint:
    def __init__(self, bucket: str, prefix: str, uri: str, *, endpoint: str | None = None) -> None:
        self.bucket, self.prefix, self.uri = bucket, prefix.rstrip("/"), uri
        self.client = s3_client(endpoint)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _errors(self, action: str) -> contextlib.AbstractContextManager[None]:
        """S3 failures as one-line errors: temporary (retry) or bad input (never retry)."""
        return remote_errors(f"cannot {action} {self.uri}", field="checkpoint")

    def read_manifest(self) -> Manifest | None:
        with self._errors("read"):
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=self._key(MANIFEST))["Body"].read()
            except self.client.exceptions.NoSuchKey:
                return None
        return Manifest.from_json(body.decode("utf-8"))

    def write_manifest(self, manifest: Manifest) -> None:
        # a single PUT is atomic in S3: readers see the old or the new manifest
        with self._errors("write"):
            self.client.put_object(Bucket=self.bucket, Key=self._key(MANIFEST), Body=manifest.to_json().encode())

    def put_segment(self, name: str, local: Path) -> None:
        with self._errors("write"):
            self.client.upload_file(str(local), self.bucket, self._key(name))

    def get_segment(self, name: str, dest: Path) -> None:
        with self._errors("read"):
            self.client.download_file(self.bucket, self._key(name), str(dest))


class BlobCheckpoint:
    """A folder of a Blob container; every write is one committed blob (see :mod:`faceswap.blob`)."""

    def __init__(self, folder: AzPath, uri: str, endpoints: blob.BlobEndpoints | None) -> None:
        self.folder, self.uri, self.endpoints = folder, uri, endpoints
        self.client = blob.container_client(folder, endpoints)

    def _path(self, name: str) -> AzPath:
        prefix = self.folder.name.rstrip("/")
        return AzPath(self.folder.account, self.folder.container, f"{prefix}/{name}" if prefix else name)

    def read_manifest(self) -> Manifest | None:
        from azure.core.exceptions import ResourceNotFoundError

        with blob.blob_errors(f"cannot read {self.uri}", field="checkpoint"):
            try:
                body = self.client.download_blob(self._path(MANIFEST).name).readall()
            except ResourceNotFoundError:
                return None
        return Manifest.from_json(body.decode("utf-8"))

    def write_manifest(self, manifest: Manifest) -> None:
        # one Put Blob replaces a blob whole: readers see the old or the new manifest
        with blob.blob_errors(f"cannot write {self.uri}", field="checkpoint"):
            self.client.upload_blob(self._path(MANIFEST).name, manifest.to_json().encode(), overwrite=True)

    def put_segment(self, name: str, local: Path) -> None:
        blob.upload_blob(self._path(name), local, field="checkpoint", endpoints=self.endpoints)

    def get_segment(self, name: str, dest: Path) -> None:
        blob.download_blob(self._path(name), dest, field="checkpoint", max_bytes=None, endpoints=self.endpoints)


def open_checkpoint(
    uri: str, *, blob_endpoints: blob.BlobEndpoints | None = None, s3_endpoints: Mapping[str, str] | None = None
) -> CheckpointStore:
    """A store for a local directory, ``file://`` URI, ``s3://bucket/prefix`` or ``az://account/container/prefix``."""
    if uri.startswith("az://"):
        try:
            folder = split_az(uri.rstrip("/") + "/")
        except ValueError as exc:
            raise BadInput(str(exc), field="checkpoint") from None
        endpoint = (blob_endpoints or {}).get(folder.account)
        return BlobCheckpoint(folder, uri, {folder.account: endpoint} if endpoint else None)
    location = parse_uri(uri, field="checkpoint", s3_endpoints=s3_endpoints)
    if location.scheme == "file":
        return LocalCheckpoint(Path(location.path))
    if location.scheme == "s3":
        return S3Checkpoint(location.bucket, location.path, uri, endpoint=location.endpoint)
    raise BadInput(
        "checkpoints go to a directory, s3://bucket/prefix or az://account/container/prefix", field="checkpoint"
    )
