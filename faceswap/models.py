"""The model cache: a directory of ONNX files described by ``manifest.json``.

Operators drop licensed models (inswapper_128, an ArcFace recognizer) into
``FUSIONPLANE_MODEL_DIR`` with a manifest entry naming the file, its sha256
and its input/output signature. The YuNet detector ships inside the package.
A model is verified (file present, checksum, signature against the manifest
and against what its role needs) before any frame is read, so a bad cache
fails a job in a second with a clear message instead of mid-video.

Manifest format::

    {"models": [{"name": "inswapper_128", "role": "swapper",
                 "file": "inswapper_128.onnx", "sha256": "<64 hex>",
                 "inputs": {"target": [1, 3, 128, 128], "source": [1, 512]},
                 "outputs": {"output": [1, 3, 128, 128]}}]}

A dimension is an integer, or a string/null for a symbolic (batch) dimension.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceswap.config import WorkerSettings
from faceswap.errors import ModelError

if TYPE_CHECKING:
    import onnx

__all__ = [
    "BUNDLED_DIR",
    "ROLES",
    "ModelEntry",
    "ModelStore",
    "default_model_dir",
    "read_signature",
    "sha256_file",
]

BUNDLED_DIR = Path(__file__).parent / "assets" / "yunet"
MANIFEST = "manifest.json"

Dim = int | str | None
Signature = dict[str, list[Dim]]

#: what each role needs from a model, whatever the manifest says: the core
#: feeds tensors of exactly these shapes. ``None`` matches any dimension.
ROLES: dict[str, dict[str, list[tuple[Dim, ...]]]] = {
    "detector": {"inputs": [(1, 3, 640, 640)], "outputs": []},
    "swapper": {"inputs": [(1, 3, 128, 128), (1, 512)], "outputs": [(1, 3, 128, 128)]},
    "recognizer": {"inputs": [(None, 3, 112, 112)], "outputs": [(None, 512)]},
}

_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()
#: signatures by (path, size, mtime): a second job in the process does not parse a 500 MB model again
_SIGNATURE_CACHE: dict[tuple[str, int, int], tuple[Signature, Signature]] = {}


def default_model_dir() -> Path:
    """``FUSIONPLANE_MODEL_DIR``, or ``~/.cache/fusionplane/models``."""
    return WorkerSettings.from_env().model_dir


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, remembered per (path, size, mtime) within the process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASH_CACHE:
            return _HASH_CACHE[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    with _HASH_LOCK:
        _HASH_CACHE[key] = value
    return value


def _dims(value_info: onnx.ValueInfoProto) -> list[Dim]:
    dims: list[Dim] = []
    for dim in value_info.type.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or None)
    return dims


def read_signature(path: Path) -> tuple[Signature, Signature]:
    """Graph inputs (without initializers) and outputs of an ONNX file, remembered per (path, size, mtime)."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise ModelError(f"{path.name} is not a readable ONNX file: {exc.strerror or exc}", field="model") from exc
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _HASH_LOCK:
        known = _SIGNATURE_CACHE.get(key)
    if known is not None:
        return {k: list(v) for k, v in known[0].items()}, {k: list(v) for k, v in known[1].items()}
    signature = _parse_signature_file(path)
    with _HASH_LOCK:
        _SIGNATURE_CACHE[key] = signature
    return {k: list(v) for k, v in signature[0].items()}, {k: list(v) for k, v in signature[1].items()}


def _parse_signature_file(path: Path) -> tuple[Signature, Signature]:
    # imported here, not at the top: onnx pulls in ml_dtypes (about 0.45 s), and every fusionctl start imports
    # this module; only loading a model needs it
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends from protobuf
        raise ModelError(f"{path.name} is not a readable ONNX file: {exc}", field="model") from exc
    initializers = {init.name for init in model.graph.initializer}
    inputs = {vi.name: _dims(vi) for vi in model.graph.input if vi.name not in initializers}
    outputs = {vi.name: _dims(vi) for vi in model.graph.output}
    return inputs, outputs


def _dim_matches(expected: Dim, actual: Dim) -> bool:
    if expected is None or isinstance(expected, str):
        return True  # symbolic in the contract: anything goes
    return actual == expected or actual is None or (isinstance(actual, str) and expected == 1)


def _shape_matches(expected: Sequence[Dim], actual: Sequence[Dim]) -> bool:
    return len(expected) == len(actual) and all(_dim_matches(e, a) for e, a in zip(expected, actual, strict=True))


@dataclass(frozen=True)
class ModelEntry:
    """One manifest entry, resolved against its directory."""

    name: str
    role: str
    path: Path
    sha256: str
    inputs: Signature
    outputs: Signature
    bundled: bool = False

    @classmethod
    def parse(cls, raw: Any, *, base: Path, where: str, bundled: bool = False) -> ModelEntry:
        if not isinstance(raw, Mapping):
            raise ModelError("must be an object", field=where)
        for key in ("name", "role", "file", "sha256", "inputs", "outputs"):
            if key not in raw:
                raise ModelError("is required", field=f"{where}.{key}")
        name, role, file, digest = raw["name"], raw["role"], raw["file"], raw["sha256"]
        if not isinstance(name, str) or not name:
            raise ModelError("must be a non-empty string", field=f"{where}.name")
        if role not in ROLES:
            raise ModelError(f"must be one of {', '.join(ROLES)}", field=f"{where}.role")
        if not isinstance(file, str) or not file or Path(file).is_absolute() or ".." in Path(file).parts:
            raise ModelError("must be a file name inside the model directory", field=f"{where}.file")
        if not isinstance(digest, str) or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ModelError("must be 64 lowercase hex characters", field=f"{where}.sha256")
        return cls(
            name=name,
            role=role,
            path=base / file,
            sha256=digest,
            inputs=_parse_signature(raw["inputs"], f"{where}.inputs"),
            outputs=_parse_signature(raw["outputs"], f"{where}.outputs"),
            bundled=bundled,
        )

    def verify(self) -> Path:
        """Check presence, checksum and signature; return the file's path."""
        if not self.path.is_file():
            raise ModelError(f"model file {self.path} is missing", field=f"models.{self.name}")
        actual = sha256_file(self.path)
        if actual != self.sha256:
            raise ModelError(
                f"checksum mismatch for {self.path.name}: manifest says {self.sha256[:12]}..., "
                f"file is {actual[:12]}...",
                field=f"models.{self.name}.sha256",
            )
        inputs, outputs = read_signature(self.path)
        self._compare(self.inputs, inputs, "inputs")
        self._compare(self.outputs, outputs, "outputs")
        self._check_role(inputs, outputs)
        return self.path

    def _compare(self, declared: Signature, actual: Signature, kind: str) -> None:
        for tensor, shape in declared.items():
            if tensor not in actual:
                raise ModelError(
                    f"{self.path.name} has no {kind[:-1]} named {tensor!r} (it has {sorted(actual)})",
                    field=f"models.{self.name}.{kind}.{tensor}",
                )
            if not _shape_matches(shape, actual[tensor]):
                raise ModelError(
                    f"{self.path.name} {kind[:-1]} {tensor!r} is {actual[tensor]}, manifest says {shape}",
                    field=f"models.{self.name}.{kind}.{tensor}",
                )

    def _check_role(self, inputs: Signature, outputs: Signature) -> None:
        need = ROLES[self.role]
        for kind, have in (("inputs", inputs), ("outputs", outputs)):
            shapes = list(have.values())
            for wanted in need[kind]:
                if not any(_shape_matches(wanted, shape) for shape in shapes):
                    raise ModelError(
                        f"{self.path.name} is not a usable {self.role}: no {kind[:-1]} of shape "
                        f"{list(wanted)} (it has {shapes})",
                        field=f"models.{self.name}.{kind}",
                    )


def _parse_signature(raw: Any, where: str) -> Signature:
    if not isinstance(raw, Mapping) or not raw:
        raise ModelError("must be an object of tensor name -> shape", field=where)
    signature: Signature = {}
    for tensor, shape in raw.items():
        if not isinstance(shape, list) or not all(
            (isinstance(d, int) and not isinstance(d, bool) and d > 0) or d is None or isinstance(d, str) for d in shape
        ):
            raise ModelError("must be a list of positive integers, strings or null", field=f"{where}.{tensor}")
        signature[str(tensor)] = list(shape)
    return signature


def _load_manifest(directory: Path, *, bundled: bool) -> list[ModelEntry]:
    path = directory / MANIFEST
    if not path.is_file():
        return []
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}", field="manifest") from exc
    raw_models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(raw_models, list):
        raise ModelError(f'{path} needs a top-level "models" list', field="manifest.models")
    entries = [
        ModelEntry.parse(raw, base=directory, where=f"models[{i}]", bundled=bundled) for i, raw in enumerate(raw_models)
    ]
    names = [entry.name for entry in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ModelError(f"{path} names {', '.join(duplicates)} more than once", field="manifest.models")
    return entries


class ModelStore:
    """The bundled detector plus the operator's model directory."""

    def __init__(self, model_dir: Path | None = None) -> None:
        self.model_dir = model_dir if model_dir is not None else default_model_dir()
        self._entries: dict[str, ModelEntry] | None = None

    def entries(self) -> list[ModelEntry]:
        """Every model known, bundled first; an operator entry may not shadow a bundled one."""
        if self._entries is None:
            entries: dict[str, ModelEntry] = {}
            for entry in _load_manifest(BUNDLED_DIR, bundled=True) + _load_manifest(self.model_dir, bundled=False):
                if entry.name in entries:
                    raise ModelError(
                        f"{entry.name} is bundled with FusionPlane; use another name",
                        field=f"models.{entry.name}",
                    )
                entries[entry.name] = entry
            self._entries = entries
        return list(self._entries.values())

    def get(self, name: str, *, role: str | None = None) -> ModelEntry:
        """The entry for ``name``; a clear error when absent or of another role."""
        known = {entry.name: entry for entry in self.entries()}
        if name not in known:
            raise ModelError(
                f"model {name!r} is not in {self.model_dir / MANIFEST} (known: {', '.join(sorted(known)) or 'none'})",
                field="models",
            )
        entry = known[name]
        if role is not None and entry.role != role:
            raise ModelError(f"model {name!r} is a {entry.role}, not a {role}", field="models")
        return entry

    def verified_path(self, name: str, *, role: str | None = None) -> Path:
        """Path of a model that passed :meth:`ModelEntry.verify`."""
        return self.get(name, role=role).verify()
