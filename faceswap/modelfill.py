"""Fill a model cache from a models manifest whose entries name where each file comes from.

The fill manifest is the worker's own ``manifest.json`` (:mod:`faceswap.models`)
with one more key per entry, ``source``: an ``s3://bucket/key`` or an
``https://`` URL::

    {"models": [{"name": "inswapper_128", "role": "swapper", "file": "inswapper_128.onnx",
                 "sha256": "<64 hex>", "source": "s3://acme-models/inswapper_128.onnx",
                 "inputs": {...}, "outputs": {...}}]}

For each entry the fill keeps a file already in place that passes the
worker's own check (checksum and signature), else downloads the source into
a hidden temporary file in the destination, checks it the same way, and
renames it into place: a cache never holds a half-written or unverified
model under its real name, whatever fails. Once every model is in place the
manifest is written (atomically) as the cache's ``manifest.json``, so the
worker verifies exactly what was filled.

``https://`` sources go through :func:`faceswap.fetcher.download`: no
``http://``, no internal address (unless the operator names the host), every
redirect checked. ``s3://`` goes through boto3's credential chain and
endpoint (``AWS_ENDPOINT_URL`` for S3-compatible stores).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from faceswap.errors import BadInput, FaceSwapError, ModelError
from faceswap.fetcher import FetchRules, download
from faceswap.models import BUNDLED_DIR, MANIFEST, ModelEntry

__all__ = ["FillItem", "FillResult", "fill_models", "read_fill_manifest"]

_SOURCE_SCHEMES = ("s3://", "https://")


@dataclass(frozen=True)
class FillItem:
    """One model to put in the cache: the worker's manifest entry and where its bytes come from."""

    entry: ModelEntry
    source: str

    @property
    def name(self) -> str:
        return self.entry.name


@dataclass(frozen=True)
class FillResult:
    """What the fill did for one model: ``present`` (kept), ``downloaded`` or ``failed`` (with the error)."""

    name: str
    action: Literal["present", "downloaded", "failed"]
    bytes: int | None = None
    error: FaceSwapError | None = None


def _check_source(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not raw.startswith(_SOURCE_SCHEMES):
        raise ModelError("must be an s3://bucket/key or https:// URL", field=f"{where}.source")
    return raw


def _check_inside(entry: ModelEntry, dest: Path, where: str) -> None:
    """The file must land inside ``dest`` (no link out of it) and must not overwrite the manifest itself."""
    relative = entry.path.relative_to(dest)
    if relative.as_posix() == MANIFEST or any(part.startswith(".") for part in relative.parts):
        raise ModelError("must not be manifest.json or a hidden name", field=f"{where}.file")
    if "\\" in relative.as_posix():
        raise ModelError("must not hold backslashes", field=f"{where}.file")
    resolved = entry.path.resolve()
    if not resolved.is_relative_to(dest.resolve()):
        raise ModelError("resolves outside the model directory", field=f"{where}.file")


def _bundled_names() -> set[str]:
    """The models the package ships (the worker refuses a cache entry that reuses one of their names)."""
    document = json.loads((BUNDLED_DIR / MANIFEST).read_text(encoding="utf-8"))
    return {str(entry["name"]) for entry in document["models"]}


def read_fill_manifest(path: Path, dest: Path) -> tuple[dict[str, Any], list[FillItem]]:
    """The manifest document and its entries resolved against ``dest``; :class:`ModelError` names a bad field."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not a readable JSON file: {exc}", field="manifest") from exc
    raw_models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(raw_models, list) or not raw_models:
        raise ModelError(f'{path} needs a non-empty top-level "models" list', field="manifest.models")
    items: list[FillItem] = []
    for index, raw in enumerate(raw_models):
        where = f"models[{index}]"
        entry = ModelEntry.parse(raw, base=dest, where=where)
        _check_inside(entry, dest, where)
        items.append(FillItem(entry=entry, source=_check_source(raw.get("source"), where)))
    bundled = _bundled_names() & {item.name for item in items}
    if bundled:
        names = ", ".join(sorted(bundled))
        raise ModelError(f"{names} is bundled with FusionPlane; use another name", field="manifest.models")
    for seen in ("name", "file"):
        values = [item.name if seen == "name" else str(item.entry.path) for item in items]
        if len(set(values)) != len(values):
            raise ModelError(f"{path} names the same {seen} twice", field="manifest.models")
    return document, items


def _verified(entry: ModelEntry) -> bool:
    try:
        entry.verify()
    except ModelError:
        return False
    return True


def _fetch_s3(source: str, tmp: Path, *, rules: FetchRules, field: str) -> None:
    from faceswap.uris import fetch, parse_uri

    location = parse_uri(source, field=field)
    # fetch() names its file after the field; download into a folder of our own, then move it over tmp
    with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=".s3-") as folder:
        os.replace(fetch(location, Path(folder), field=field, rules=rules), tmp)


def _download(item: FillItem, tmp: Path, *, rules: FetchRules) -> None:
    field = f"models.{item.name}.source"
    if item.source.startswith("s3://"):
        _fetch_s3(item.source, tmp, rules=rules, field=field)
    else:
        download(item.source, tmp, field=field, rules=rules)


def _fill_one(item: FillItem, *, rules: FetchRules) -> FillResult:
    target = item.entry.path
    if target.is_file() and _verified(item.entry):
        return FillResult(item.name, "present", target.stat().st_size)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _download(item, tmp, rules=rules)
        dataclasses.replace(item.entry, path=tmp).verify()  # the checksum and signature the worker checks
        tmp.chmod(0o644)  # read by workers running as another uid on the same volume
        os.replace(tmp, target)
    except FaceSwapError as exc:
        return FillResult(item.name, "failed", error=exc)
    finally:
        tmp.unlink(missing_ok=True)
    return FillResult(item.name, "downloaded", target.stat().st_size)


def _write_manifest(document: Mapping[str, Any], dest: Path) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{MANIFEST}.", suffix=".partial", dir=dest)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, dest / MANIFEST)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def fill_models(
    manifest: Path,
    dest: Path,
    *,
    rules: FetchRules | None = None,
    progress: Callable[[FillResult], None] | None = None,
) -> list[FillResult]:
    """Put every model of ``manifest`` in ``dest``, verified; write ``dest/manifest.json`` when all are there.

    A model that fails (download refused or broken, checksum or signature
    wrong) leaves nothing behind and does not stop the others; the cache's
    manifest is then left as it was, so a worker never reads a manifest
    naming a model that is not there. Raises :class:`ModelError` for a bad
    manifest and :class:`BadInput` for a destination that is not a directory.
    """
    rules = rules or FetchRules()
    if dest.exists() and not dest.is_dir():
        raise BadInput(f"{dest} is not a directory", field="dest")
    dest.mkdir(parents=True, exist_ok=True)
    document, items = read_fill_manifest(manifest, dest)
    results: list[FillResult] = []
    for item in items:
        result = _fill_one(item, rules=rules)
        results.append(result)
        if progress is not None:
            progress(result)
    if all(result.error is None for result in results):
        _write_manifest(document, dest)
    return results
