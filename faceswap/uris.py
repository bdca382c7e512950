"""Inputs and outputs by URI: plain paths, ``file://``, ``s3://``, ``az://`` and ``https://``.

Outputs are never half-written: a local output is written to a temporary file
in the same directory and renamed into place; an S3 output is uploaded with
boto3's managed transfer, whose multipart upload only becomes an object when
it completes. boto3 reads ``AWS_ENDPOINT_URL`` itself, which is how tests and
S3-compatible stores (MinIO, Ceph) are reached. ``az://<account>/<container>/<blob>``
(Azure Blob Storage) lives in :mod:`faceswap.blob`; its endpoint is the one
``blob_endpoints`` names for the account, else the account's default.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from faceswap import blob
from faceswap.access import AzPath, split_az
from faceswap.errors import BadInput, FaceSwapError, TemporaryFailure
from faceswap.fetcher import FetchRules, download

__all__ = ["Location", "fetch", "parse_uri", "remote_errors", "write_atomically"]

SCHEMES = ("file", "s3", "az", "https", "http")
# mkstemp creates 0600 files; published outputs get the usual 0666 & ~umask, with the umask of the
# moment they are published (a umask set after import, e.g. by ``fusionctl serve``, counts).
_UMASK = os.umask(0)
os.umask(_UMASK)


@dataclass(frozen=True)
class Location:
    """A parsed URI: ``scheme`` is file, s3, az, https or http."""

    scheme: str
    path: str  # local path, S3 key, blob name, or the full URL for http(s)
    bucket: str = ""  # the S3 bucket or the Blob container
    raw: str = ""
    account: str = ""  # az: the storage account
    #: the service endpoint the spec names: an az account's Blob endpoint, or an s3 bucket's (S3-compatible)
    endpoint: str | None = None

    @property
    def az_path(self) -> AzPath:
        return AzPath(self.account, self.bucket, self.path)

    @property
    def blob_endpoints(self) -> dict[str, str]:
        return {self.account: self.endpoint} if self.endpoint else {}

    @property
    def name(self) -> str:
        # for URLs, the path without ?query (a presigned URL's signature is not a file name)
        path = urlparse(self.path).path if self.scheme in ("http", "https") else self.path
        return os.path.basename(path.rstrip("/")) or "input"

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix.lower()


def parse_uri(
    uri: str,
    *,
    field: str,
    blob_endpoints: blob.BlobEndpoints | None = None,
    s3_endpoints: Mapping[str, str] | None = None,
) -> Location:
    """Validate and split a URI; plain paths are ``file``; ``blob_endpoints`` (account -> URL) for az://,
    ``s3_endpoints`` (bucket -> URL) for s3:// buckets on an S3-compatible store."""
    if not isinstance(uri, str) or not uri.strip():
        raise BadInput("must be a non-empty path or URI", field=field)
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in uri):  # C0, DEL and C1 controls
        raise BadInput("contains control characters", field=field)
    parsed = urlparse(uri)
    if len(parsed.scheme) <= 1:  # no scheme, or a Windows drive letter
        return Location("file", uri, raw=uri)
    scheme = parsed.scheme.lower()
    if scheme not in SCHEMES:
        raise BadInput(f"unsupported URI scheme {scheme!r}; use a path, file://, s3://, az:// or https://", field=field)
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise BadInput("file:// URIs must name a local path", field=field)
        return Location("file", unquote(parsed.path), raw=uri)
    if scheme == "s3":
        key = parsed.path.lstrip("/")
        if not parsed.netloc or not key:
            raise BadInput("s3 URIs need a bucket and a key: s3://bucket/key", field=field)
        endpoint = (s3_endpoints or {}).get(parsed.netloc)
        return Location("s3", key, bucket=parsed.netloc, raw=uri, endpoint=endpoint)
    if scheme == "az":
        try:
            path = split_az(uri)
        except ValueError as exc:
            raise BadInput(str(exc), field=field) from None
        if not path.name or path.name.endswith("/"):
            raise BadInput("az URIs need an account, a container and a blob: az://account/container/blob", field=field)
        endpoint = (blob_endpoints or {}).get(path.account)
        return Location("az", path.name, bucket=path.container, raw=uri, account=path.account, endpoint=endpoint)
    if not parsed.netloc:
        raise BadInput("URL has no host", field=field)
    return Location(scheme, uri, raw=uri)


#: S3 error codes that say "try again", whatever the HTTP status
_S3_TEMPORARY_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "503",
}


def _classify(exc: BaseException, message: str, field: str) -> FaceSwapError:
    """Storage and HTTP failures: temporary (exit 75, retry) or bad input (exit 65, never retry).

    Throttling, timeouts, dropped connections and 5xx are temporary. A missing
    key or bucket, access denied, a 4xx, or an address where nothing answers
    (connection refused, unknown host) fail the same way on every retry.
    """
    import httpx
    from boto3.exceptions import RetriesExceededError
    from botocore.exceptions import ClientError, ConnectTimeoutError, HTTPClientError

    cause: BaseException = exc
    # boto3's managed transfers wrap the ClientError (S3UploadFailedError)
    if not isinstance(cause, ClientError) and isinstance(cause.__context__, ClientError):
        cause = cause.__context__
    temporary = False
    if isinstance(cause, ClientError):
        error = cause.response.get("Error", {})
        status = int(cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        temporary = error.get("Code") in _S3_TEMPORARY_CODES or status >= 500 or status == 429
        message = f"{message}: {error.get('Code', 'error')} {error.get('Message', '')}".rstrip()
    elif isinstance(cause, httpx.HTTPStatusError):
        status = cause.response.status_code
        temporary = status >= 500 or status == 429
        message = f"{message}: HTTP {status}"
    else:
        temporary = isinstance(
            cause,
            (
                ConnectTimeoutError,
                HTTPClientError,
                RetriesExceededError,
                httpx.TimeoutException,
                httpx.RemoteProtocolError,
                httpx.ReadError,
                httpx.WriteError,
            ),
        )
        message = f"{message}: {cause}"
    return TemporaryFailure(message, field=field) if temporary else BadInput(message, field=field)


@contextlib.contextmanager
def remote_errors(message: str, *, field: str) -> Iterator[None]:
    """Turn S3 and HTTP client errors raised inside the block into classified core errors."""
    import httpx
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError, Boto3Error, httpx.HTTPError) as exc:
        raise _classify(exc, message, field) from exc


def s3_client(endpoint: str | None = None) -> Any:
    """An S3 client: at ``endpoint`` (a bucket the spec places on an S3-compatible store), else boto3's own."""
    import boto3
    from botocore.config import Config

    # few retries: a worker on a spot node should fail over, not sit in backoff
    config = Config(retries={"max_attempts": 3, "mode": "standard"})
    return boto3.client("s3", endpoint_url=endpoint, config=config)


def fetch(
    location: Location,
    workdir: Path,
    *,
    field: str,
    rules: FetchRules | None = None,
    web_hosts: tuple[str, ...] | None = None,
) -> Path:
    """A local, readable file holding the input; downloads into ``workdir`` when remote.

    http(s) inputs go through :func:`faceswap.fetcher.download` (no internal
    addresses, every redirect re-checked, the size cap checked while
    reading); ``web_hosts`` is the tenant's list of hosts (None: no tenant
    limit). An s3 object larger than the cap is refused before it is read.
    """
    rules = rules or FetchRules()
    if location.scheme == "file":
        path = Path(location.path)
        if not path.exists():
            raise BadInput(f"{path} does not exist", field=field)
        if not path.is_file():
            raise BadInput(f"{path} is not a regular file", field=field)
        if not os.access(path, os.R_OK):
            raise BadInput(f"{path} is not readable", field=field)
        return path
    dest = workdir / f"{field}{location.suffix}"
    if location.scheme == "s3":
        with remote_errors(f"cannot read {location.raw}", field=field):
            client = s3_client(location.endpoint)
            size = int(client.head_object(Bucket=location.bucket, Key=location.path).get("ContentLength") or 0)
            if size > rules.max_bytes:
                raise BadInput(f"cannot read {location.raw}: larger than the {rules.max_bytes} byte limit", field=field)
            client.download_file(location.bucket, location.path, str(dest))
        return dest
    if location.scheme == "az":
        blob.download_blob(
            location.az_path, dest, field=field, max_bytes=rules.max_bytes, endpoints=location.blob_endpoints
        )
        return dest
    download(location.path, dest, field=field, rules=rules, hosts=web_hosts)
    return dest


def _current_umask() -> int:
    """The process umask now, read from /proc (setting it to read it back would race other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _UMASK  # no /proc (or a kernel before 4.7): the umask at import


@contextlib.contextmanager
def write_atomically(location: Location, *, field: str = "output") -> Iterator[Path]:
    """Yield a temporary local path; publish it at ``location`` only if the block succeeds."""
    if location.scheme in ("http", "https"):
        raise BadInput("outputs can be written to a path, file://, s3:// or az:// only", field=field)
    if location.scheme == "file":
        final = Path(location.path)
        if final.is_dir():
            raise BadInput(f"{final} is a directory", field=field)
        parent = final.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"cannot create {parent}: {exc.strerror}", field=field) from exc
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".partial{final.suffix}", dir=parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            yield tmp
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
            tmp.chmod(0o666 & ~_current_umask())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return
    staging = Path(tempfile.mkdtemp(prefix="fusionplane-out-"))
    tmp = staging / f"output{location.suffix}"
    try:
        yield tmp
        if location.scheme == "az":
            blob.upload_blob(location.az_path, tmp, field=field, endpoints=location.blob_endpoints)
            return
        with remote_errors(f"cannot write {location.raw}", field=field):
            s3_client(location.endpoint).upload_file(str(tmp), location.bucket, location.path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
