"""Which execution providers really load here: a dlopen, not onnxruntime's word for it.

The onnxruntime-gpu wheel lists ``TensorrtExecutionProvider`` in
``get_available_providers()`` whether or not TensorRT is installed (seen with
1.31.1 on H200 nodes without ``libnvinfer.so.10``), so an ``auto`` decided
from that list picked TensorRT on every GPU node and every job there exited 69
while CUDA would have worked. A provider counts here when its own shared
library from onnxruntime's ``capi`` folder loads: the dynamic linker then has
to resolve every library it needs (``libnvinfer.so.10``, ``libcublas.so.13``,
...), and when one is missing its error names that one.

The linker does not search site-packages, so the CUDA, cuDNN and TensorRT
libraries of the ``nvidia-*`` and ``tensorrt-cu*-libs`` pip packages are loaded
first by path, as ``onnxruntime.preload_dlls()`` does; a library already
loaded satisfies the provider's dependency of the same name.

Deciding (:func:`decide`) is pure; probing (:func:`probe_providers`) takes
the loader as an argument, so tests drive both without a GPU.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "GPU_PROVIDERS",
    "ORT_NAMES",
    "PROVIDER_LIBRARIES",
    "Loader",
    "ProbeResult",
    "ProviderDecision",
    "decide",
    "dlopen",
    "pip_library_dirs",
    "preload_libraries",
    "probe_providers",
]

#: onnxruntime's names for ours, best first
ORT_NAMES = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
GPU_PROVIDERS = ("tensorrt", "cuda")
#: each GPU provider's own library in onnxruntime/capi; loading it resolves all of its NEEDED entries
PROVIDER_LIBRARIES = {
    "tensorrt": "libonnxruntime_providers_tensorrt.so",
    "cuda": "libonnxruntime_providers_cuda.so",
}
#: the bridge both provider libraries link against, next to them in capi
SHARED_LIBRARY = "libonnxruntime_providers_shared.so"
#: the NVIDIA driver: without it both libraries may load and still find no GPU
DRIVER_LIBRARY = "libcuda.so.1"
#: the CUDA provider opens cuDNN only when its first session is created (not a NEEDED entry)
CUDNN_LIBRARY = "libcudnn.so.9"
#: TensorRT sonames whose ``getInferLibVersion`` gives the version actually loaded
NVINFER_SONAMES = ("libnvinfer.so.10", "libnvinfer.so.11")
#: what is preloaded from pip packages' folders (file names starting so); nothing else there is touched
PRELOAD_PREFIXES = (
    "libcudart.",
    "libcublasLt.",
    "libcublas.",
    "libcurand.",
    "libcufft.",
    "libnvrtc.",
    "libnvJitLink.",
    "libcudnn",
    "libnvinfer.",
    "libnvinfer_plugin.",
    "libnvonnxparser.",
)

#: opens a shared library (a path or a soname); raises OSError with the linker's message
Loader = Callable[[str], object]


def dlopen(name: str) -> object:
    """The real loader: ``dlopen`` through ctypes, dependencies resolved at once."""
    return ctypes.CDLL(name)


@dataclass(frozen=True)
class ProbeResult:
    """One provider's load check: whether it loaded and, if not, the linker's reason."""

    provider: str
    loaded: bool
    #: "loaded", "built in", or why not (the dlopen error, which names the missing library)
    detail: str
    #: tensorrt only: the version of the libnvinfer that was loaded
    version: str | None = None

    def describe(self) -> str:
        return f"{self.provider}: {self.detail}"


@dataclass(frozen=True)
class ProviderDecision:
    """The provider a request resolves to, why, and every probe it was decided from."""

    requested: str
    #: None: the requested provider does not load here (the reason says why)
    provider: str | None
    reason: str
    probes: tuple[ProbeResult, ...]

    def probe(self, provider: str) -> ProbeResult | None:
        return next((p for p in self.probes if p.provider == provider), None)

    def fields(self) -> dict[str, str | None]:
        """What the worker reports: ``execution_provider`` and ``execution_provider_reason``."""
        return {"execution_provider": self.provider, "execution_provider_reason": self.reason}


def pip_library_dirs(roots: Iterable[str | Path]) -> list[Path]:
    """``tensorrt_libs`` and ``nvidia/*/lib`` under each root (sys.path entries) that has them."""
    found: list[Path] = []
    for root in roots:
        base = Path(root)
        if not base.is_dir():
            continue
        candidates = [base / "tensorrt_libs", *sorted(base.glob("nvidia/*/lib"))]
        found.extend(path for path in candidates if path.is_dir() and path not in found)
    return found


def preload_libraries(dirs: Sequence[Path], *, loader: Loader) -> list[str]:
    """Load the CUDA/cuDNN/TensorRT libraries in ``dirs``; returns the names loaded.

    They depend on each other and the linker cannot find them there by name, so
    the files are retried until a pass loads nothing new (each pass loads what
    the previous ones made resolvable). A file that never loads is left to the
    provider probe, which names what is missing.
    """
    pending = [
        path
        for folder in dirs
        for path in sorted(folder.iterdir())
        if path.is_file() and ".so" in path.name and path.name.startswith(PRELOAD_PREFIXES)
    ]
    loaded: list[str] = []
    progress = True
    while pending and progress:
        progress = False
        for path in list(pending):
            try:
                loader(str(path))
            except OSError:
                continue
            pending.remove(path)
            loaded.append(path.name)
            progress = True
    return loaded


def _tensorrt_version(loader: Loader) -> str | None:
    for soname in NVINFER_SONAMES:
        try:
            handle = loader(soname)  # already loaded by the provider library: the same handle
            read = getattr(handle, "getInferLibVersion", None)
            value = int(read()) if callable(read) else -1
        except (OSError, TypeError, ValueError):
            continue
        if value < 0:
            continue
        # TensorRT 10 encodes it as major*10000 + minor*100 + patch
        return f"{value // 10000}.{value // 100 % 100}.{value % 100}"
    return None


def _probe_gpu(provider: str, *, advertised: Collection[str], capi_dir: Path, loader: Loader) -> ProbeResult:
    library = capi_dir / PROVIDER_LIBRARIES[provider]
    if not library.is_file():
        return ProbeResult(provider, False, f"{library.name} is absent from this onnxruntime build")
    if ORT_NAMES[provider] not in advertised:
        return ProbeResult(provider, False, f"{ORT_NAMES[provider]} is not offered by this onnxruntime build")
    needed = [DRIVER_LIBRARY]
    shared = capi_dir / SHARED_LIBRARY
    if shared.is_file():
        needed.append(str(shared))
    needed.append(str(library))
    if provider == "cuda":
        needed.append(CUDNN_LIBRARY)
    for name in needed:
        try:
            loader(name)
        except OSError as exc:
            return ProbeResult(provider, False, str(exc).strip() or f"{Path(name).name} did not load")
    version = _tensorrt_version(loader) if provider == "tensorrt" else None
    return ProbeResult(provider, True, "loaded" if version is None else f"loaded (TensorRT {version})", version)


def probe_providers(
    *,
    advertised: Collection[str],
    capi_dir: Path,
    library_dirs: Sequence[Path] = (),
    loader: Loader = dlopen,
) -> tuple[ProbeResult, ...]:
    """Load-check tensorrt and cuda (after preloading ``library_dirs``); cpu is always there."""
    if any(ORT_NAMES[name] in advertised for name in GPU_PROVIDERS):
        # only a GPU build gets CUDA and cuDNN loaded into it
        preload_libraries(library_dirs, loader=loader)
    results = [_probe_gpu(name, advertised=advertised, capi_dir=capi_dir, loader=loader) for name in GPU_PROVIDERS]
    results.append(ProbeResult("cpu", True, "built in"))
    return tuple(results)


def decide(requested: str, probes: Sequence[ProbeResult]) -> ProviderDecision:
    """``auto``: the first provider that loaded, best first; otherwise the one named, if it loaded.

    The reason lists the probes looked at, e.g.
    ``"tensorrt: libnvinfer.so.10: cannot open shared object file: No such file or directory; cuda: loaded"``.
    """
    if requested == "auto":
        looked: list[ProbeResult] = []
        for probe in probes:
            looked.append(probe)
            if probe.loaded:
                reason = "; ".join(p.describe() for p in looked)
                return ProviderDecision(requested, probe.provider, reason, tuple(probes))
        return ProviderDecision(requested, None, "; ".join(p.describe() for p in looked), tuple(probes))
    named = next((p for p in probes if p.provider == requested), None)
    if named is None:
        return ProviderDecision(requested, None, f"{requested}: not an execution provider", tuple(probes))
    return ProviderDecision(
        requested, requested if named.loaded else None, f"requested; {named.describe()}", tuple(probes)
    )
