"""S3, or an S3-compatible store (MinIO, Ceph, moto in tests), as an ``ObjectStore``.

Writes above :data:`PART_BYTES` are multipart uploads whose parts are read
one at a time from the source and sent in order, hashed with sha256 as they
are read: one part in memory, whatever the file's size. (boto3's managed
transfer reads a non-seekable source into memory several parts at a time,
and a seekable one in any order, so it could not check the hash before
completing.) The promised sha256 travels as the object's metadata
(``x-amz-meta-sha256``), so :meth:`S3Store.head` can say whether an object
already holds the wanted bytes without reading them. When the bytes read do
not hash to the promise, the last part is never sent and the upload is
aborted: the key keeps what it had, no part lingers.

Credentials and the endpoint come from boto3's own chain
(``AWS_ENDPOINT_URL`` included); a target's store may name its own
``endpoint_url`` (MinIO, Ceph), which wins. Errors are translated here once:
throttling, 5xx and an endpoint that does not answer are transient, access
denied and a missing bucket are not.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any, BinaryIO

import boto3
import botocore.config
import botocore.exceptions

from controlplane.dataplane.errors import StoreError
from controlplane.dataplane.objects import ObjectInfo, read_exactly

__all__ = ["PART_BYTES", "S3Store", "split_s3_uri"]

#: multipart threshold and part size; S3's smallest part is 5 MiB
PART_BYTES = 8 << 20
_READ_BYTES = 1 << 20
_SHA256_KEY = "sha256"
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
    }
)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); ``ValueError`` when either part is missing (a prefix may end in /)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or "\x00" in uri:
        raise ValueError(f"s3 URIs name a bucket and a key: {uri!r}")
    return bucket, key


def _translate(exc: Exception, where: str) -> StoreError:
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        transient = code in _TRANSIENT_CODES or status >= 500 or status == 429
        return StoreError(f"{where}: {code}: {error.get('Message') or ''}".rstrip(": "), transient=transient)
    # the endpoint did not answer, a connection closed, no credentials yet (an instance role not ready)
    return StoreError(f"{where}: {type(exc).__name__}: {exc}", transient=True)


#: DeleteObjects' list of keys (an alias: ``list`` is a method name in the class)
_Keys = list[dict[str, str]]

_SDK_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


class _Parts:
    """The source cut into parts of ``part_bytes``, hashed as they are read; raises before the last part
    when the bytes are fewer or more than promised or do not hash to the promise."""

    def __init__(self, data: BinaryIO, *, sha256: str, size: int, part_bytes: int) -> None:
        self._data, self._want, self._size, self._part = data, sha256, size, part_bytes
        self._digest, self._read = hashlib.sha256(), 0

    def __iter__(self) -> Iterator[bytes]:
        while self._read < self._size:
            part = read_exactly(self._data, min(self._part, self._size - self._read))
            self._read += len(part)
            self._digest.update(part)
            if self._read < self._size and len(part) < self._part:
                raise ValueError(f"the source ended after {self._read} of {self._size} bytes")
            if self._read == self._size:
                if self._data.read(1):
                    raise ValueError(f"the source holds more than the promised {self._size} bytes")
                if self._digest.hexdigest() != self._want:
                    raise ValueError("the bytes read do not hash to the promised sha256")
            yield part
        if self._size == 0 and self._digest.hexdigest() != self._want:
            raise ValueError("the bytes read do not hash to the promised sha256")


class S3Store:
    """Objects under ``s3://bucket/key`` URIs of one endpoint."""

    def __init__(self, *, endpoint_url: str | None = None, client: Any = None, part_bytes: int = PART_BYTES) -> None:
        config = botocore.config.Config(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            signature_version="s3v4",  # presigned URLs carry their expiry (X-Amz-Expires), at most 7 days
        )
        self._client = client or boto3.client("s3", endpoint_url=endpoint_url, config=config)
        self._part_bytes = part_bytes

    @property
    def client(self) -> Any:
        return self._client

    def put(self, uri: str, data: BinaryIO, *, sha256: str, size: int) -> ObjectInfo:
        bucket, key = split_s3_uri(uri)
        parts = iter(_Parts(data, sha256=sha256, size=size, part_bytes=self._part_bytes))
        metadata = {_SHA256_KEY: sha256}
        try:
            if size <= self._part_bytes:
                body = b"".join(parts)  # one part at most: checked before anything is sent
                self._client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata)
            else:
                self._put_in_parts(bucket, key, parts, metadata)
        except _SDK_ERRORS as exc:
            raise _translate(exc, f"writing {uri}") from exc
        return ObjectInfo(uri=uri, size=size, sha256=sha256)

    def _put_in_parts(self, bucket: str, key: str, parts: Iterator[bytes], metadata: dict[str, str]) -> None:
        """A multipart upload, one part in memory at a time, completed only once every byte was checked.

        Anything that fails (the check, a part, the completion) aborts the
        upload, so no part lingers (and bills) and the key keeps what it had.
        """
        upload = self._client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata)["UploadId"]
        try:
            done = []
            for number, part in enumerate(parts, start=1):
                answer = self._client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=part)
                done.append({"PartNumber": number, "ETag": answer["ETag"]})
            self._client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done}
            )
        except BaseException:
            with contextlib.suppress(*_SDK_ERRORS):
                self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
            raise

    def head(self, uri: str) -> ObjectInfo | None:
        bucket, key = split_s3_uri(uri)
        try:
            answer = self._client.head_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise _translate(exc, f"reading {uri}") from exc
        except _SDK_ERRORS as exc:
            raise _translate(exc, f"reading {uri}") from exc
        metadata = answer.get("Metadata") or {}
        return ObjectInfo(uri=uri, size=int(answer["ContentLength"]), sha256=metadata.get(_SHA256_KEY))

    def open_read(self, uri: str, *, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        bucket, key = split_s3_uri(uri)
        if end is not None and end <= start:
            return iter(())
        extra = {} if start == 0 and end is None else {"Range": f"bytes={start}-{'' if end is None else end - 1}"}
        try:
            body = self._client.get_object(Bucket=bucket, Key=key, **extra)["Body"]
        except _SDK_ERRORS as exc:
            raise _translate(exc, f"reading {uri}") from exc

        def chunks() -> Iterator[bytes]:
            with body:
                yield from body.iter_chunks(_READ_BYTES)

        return chunks()

    def presign(self, uri: str, *, seconds: int) -> str | None:
        bucket, key = split_s3_uri(uri)
        try:
            return str(
                self._client.generate_presigned_url(
                    "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=seconds
                )
            )
        except _SDK_ERRORS as exc:
            raise _translate(exc, f"signing {uri}") from exc

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        bucket, key = split_s3_uri(prefix)
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
                for item in page.get("Contents", ()):
                    yield ObjectInfo(uri=f"s3://{bucket}/{item['Key']}", size=int(item["Size"]))
        except _SDK_ERRORS as exc:
            raise _translate(exc, f"listing {prefix}") from exc

    def delete_prefix(self, prefix: str) -> int:
        bucket, key = split_s3_uri(prefix)
        if not key.endswith("/"):
            raise ValueError(f"a prefix to delete ends in '/': {prefix!r}")
        removed = 0
        batch: _Keys = []
        for info in self.list(prefix):
            batch.append({"Key": split_s3_uri(info.uri)[1]})
            if len(batch) == 1000:  # DeleteObjects takes at most 1,000 keys
                removed += self._delete(bucket, batch)
                batch = []
        if batch:
            removed += self._delete(bucket, batch)
        return removed

    def _delete(self, bucket: str, keys: _Keys) -> int:
        try:
            answer = self._client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        except _SDK_ERRORS as exc:
            raise _translate(exc, f"deleting from s3://{bucket}/") from exc
        errors = answer.get("Errors") or []
        if errors:
            raise StoreError(f"deleting from s3://{bucket}/: {errors[0].get('Code')}", transient=True)
        return len(keys)
