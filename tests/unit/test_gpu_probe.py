"""The execution provider load check (faceswap/gpu_probe.py): decided by dlopen, not by the advertised list.

Fake loaders drive the decisions; the dlopen failures are real ones, from a
stub provider library compiled here whose NEEDED entry is a missing
``libnvinfer.so.10`` (skipped where there is no C compiler).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from faceswap.gpu_probe import (
    DRIVER_LIBRARY,
    PROVIDER_LIBRARIES,
    ProbeResult,
    decide,
    dlopen,
    pip_library_dirs,
    preload_libraries,
    probe_providers,
)

GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
NO_NVINFER = "libnvinfer.so.10: cannot open shared object file: No such file or directory"


class Version:
    """What ctypes gives for libnvinfer: a callable ``getInferLibVersion``."""

    def __init__(self, value: int) -> None:
        self.value = value

    def getInferLibVersion(self) -> int:  # noqa: N802 (TensorRT's C name)
        return self.value


def fake_loader(failures: dict[str, str], *, nvinfer: int | None = None) -> tuple[Callable[[str], object], list[str]]:
    """A loader that fails for names ending in a key of ``failures`` (with its text); records what it was asked."""
    asked: list[str] = []

    def load(name: str) -> object:
        asked.append(name)
        for suffix, text in failures.items():
            if name.endswith(suffix):
                raise OSError(text)
        if name.startswith("libnvinfer.so.") and nvinfer is not None:
            return Version(nvinfer)
        return object()

    return load, asked


@pytest.fixture
def capi(tmp_path: Path) -> Path:
    """A GPU build's capi folder: both provider libraries present (as files; the loader is fake)."""
    folder = tmp_path / "capi"
    folder.mkdir()
    for name in (*PROVIDER_LIBRARIES.values(), "libonnxruntime_providers_shared.so"):
        (folder / name).write_bytes(b"")
    return folder


def test_advertised_tensorrt_without_libnvinfer_makes_auto_pick_cuda_and_say_why(capi: Path) -> None:
    load, _ = fake_loader({PROVIDER_LIBRARIES["tensorrt"]: NO_NVINFER})
    probes = probe_providers(advertised=GPU_BUILD, capi_dir=capi, loader=load)
    decision = decide("auto", probes)
    assert decision.provider == "cuda"
    assert decision.reason == f"tensorrt: {NO_NVINFER}; cuda: loaded"
    assert decision.fields() == {"execution_provider": "cuda", "execution_provider_reason": decision.reason}
    tensorrt = decision.probe("tensorrt")
    assert tensorrt is not None
    assert not tensorrt.loaded
    assert "libnvinfer.so.10" in tensorrt.detail


def test_without_a_driver_auto_falls_to_cpu_naming_libcuda(capi: Path) -> None:
    load, _ = fake_loader({DRIVER_LIBRARY: "libcuda.so.1: cannot open shared object file: No such file or directory"})
    decision = decide("auto", probe_providers(advertised=GPU_BUILD, capi_dir=capi, loader=load))
    assert decision.provider == "cpu"
    assert decision.reason.count("libcuda.so.1") == 2  # tensorrt and cuda both say so
    assert decision.reason.endswith("cpu: built in")


def test_cuda_needs_cudnn_which_it_only_opens_later(capi: Path) -> None:
    load, _ = fake_loader({"libcudnn.so.9": "libcudnn.so.9: cannot open shared object file"})
    decision = decide("cuda", probe_providers(advertised=GPU_BUILD, capi_dir=capi, loader=load))
    assert decision.provider is None
    assert "libcudnn.so.9" in decision.reason


def test_tensorrt_that_loads_is_chosen_with_the_version_of_the_library_loaded(capi: Path) -> None:
    load, asked = fake_loader({}, nvinfer=101203)
    probes = probe_providers(advertised=GPU_BUILD, capi_dir=capi, loader=load)
    decision = decide("auto", probes)
    assert decision.provider == "tensorrt"
    tensorrt = decision.probe("tensorrt")
    assert tensorrt is not None
    assert tensorrt.version == "10.12.3"
    assert decision.reason == "tensorrt: loaded (TensorRT 10.12.3)"
    # the shared bridge before the provider library, the driver first of all
    trt_lib = str(capi / PROVIDER_LIBRARIES["tensorrt"])
    assert asked.index(DRIVER_LIBRARY) < asked.index(str(capi / "libonnxruntime_providers_shared.so"))
    assert asked.index(str(capi / "libonnxruntime_providers_shared.so")) < asked.index(trt_lib)


def test_a_cpu_build_offers_no_gpu_provider_and_loads_nothing(tmp_path: Path) -> None:
    load, asked = fake_loader({})
    lib_dir = tmp_path / "nvidia" / "cublas" / "lib"
    lib_dir.mkdir(parents=True)
    (lib_dir / "libcublas.so.13").write_bytes(b"")
    probes = probe_providers(
        advertised=["CPUExecutionProvider"], capi_dir=tmp_path, library_dirs=[lib_dir], loader=load
    )
    assert asked == []  # not even the pip packages' CUDA is loaded into a CPU build
    decision = decide("auto", probes)
    assert decision.provider == "cpu"
    assert "libonnxruntime_providers_tensorrt.so is absent from this onnxruntime build" in decision.reason


def test_a_library_file_present_but_not_offered_is_not_used(capi: Path) -> None:
    load, _ = fake_loader({})
    probes = probe_providers(advertised=["CUDAExecutionProvider", "CPUExecutionProvider"], capi_dir=capi, loader=load)
    assert [p.loaded for p in probes] == [False, True, True]
    assert "TensorrtExecutionProvider is not offered" in probes[0].detail


@pytest.mark.parametrize(
    ("requested", "provider"), [("cpu", "cpu"), ("cuda", "cuda"), ("tensorrt", None), ("opencl", None)]
)
def test_an_explicit_request_gets_that_provider_or_none(requested: str, provider: str | None) -> None:
    probes = (
        ProbeResult("tensorrt", False, NO_NVINFER),
        ProbeResult("cuda", True, "loaded"),
        ProbeResult("cpu", True, "built in"),
    )
    decision = decide(requested, probes)
    assert decision.provider == provider
    assert decision.requested == requested
    if requested == "tensorrt":
        assert decision.reason == f"requested; tensorrt: {NO_NVINFER}"


def test_preloading_retries_until_dependencies_are_met(tmp_path: Path) -> None:
    folder = tmp_path / "tensorrt_libs"
    folder.mkdir()
    for name in ("libnvinfer.so.10", "libnvonnxparser.so.10", "libcudart.so.13", "README.txt", "libother.so.1"):
        (folder / name).write_bytes(b"")
    loaded: set[str] = set()

    def load(path: str) -> object:
        name = Path(path).name
        # the parser needs nvinfer, nvinfer needs cudart: sorted order gets them wrong at first
        needs = {"libnvonnxparser.so.10": "libnvinfer.so.10", "libnvinfer.so.10": "libcudart.so.13"}.get(name)
        if needs is not None and needs not in loaded:
            raise OSError(f"{needs}: cannot open shared object file")
        loaded.add(name)
        return object()

    assert sorted(preload_libraries([folder], loader=load)) == [
        "libcudart.so.13",
        "libnvinfer.so.10",
        "libnvonnxparser.so.10",
    ]
    assert "libother.so.1" not in loaded  # only the CUDA/cuDNN/TensorRT names are touched


def test_pip_library_dirs_finds_tensorrt_libs_and_nvidia_lib_folders(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    for folder in ("tensorrt_libs", "nvidia/cublas/lib", "nvidia/cudnn/lib", "nvidia/cudnn/include"):
        (site / folder).mkdir(parents=True)
    roots: Iterable[str | Path] = [site, tmp_path / "missing", str(site)]
    assert pip_library_dirs(roots) == [
        site / "tensorrt_libs",
        site / "nvidia/cublas/lib",
        site / "nvidia/cudnn/lib",
    ]


def _compile(source: str, output: Path, *args: str) -> None:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler to build a stub library")
    code = output.with_suffix(".c")
    code.write_text(source, encoding="utf-8")
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(output), str(code), *args], check=True, timeout=60)


@pytest.fixture
def stub_tensorrt(tmp_path: Path) -> Path:
    """A capi folder whose TensorRT provider library really needs libnvinfer.so.10, which is gone."""
    fake = tmp_path / "fake"
    fake.mkdir()
    _compile(
        "int getInferLibVersion(void) { return 100000; }\n", fake / "libnvinfer.so.10", "-Wl,-soname,libnvinfer.so.10"
    )
    capi = tmp_path / "capi"
    capi.mkdir()
    provider = capi / PROVIDER_LIBRARIES["tensorrt"]
    _compile(
        "int getInferLibVersion(void);\nint GetProvider(void) { return getInferLibVersion(); }\n",
        provider,
        f"-L{fake}",
        "-l:libnvinfer.so.10",
    )
    shutil.rmtree(fake)  # the linker recorded NEEDED libnvinfer.so.10; now nothing provides it
    return capi


def test_a_real_dlopen_failure_names_the_missing_library(stub_tensorrt: Path) -> None:
    provider = stub_tensorrt / PROVIDER_LIBRARIES["tensorrt"]
    with pytest.raises(OSError, match=r"libnvinfer\.so\.10"):
        dlopen(str(provider))

    # the driver and cuDNN are not on this machine either: pretend they are, dlopen the rest for real
    def real_but_for_the_driver(name: str) -> object:
        return object() if name in (DRIVER_LIBRARY, "libcudnn.so.9") else dlopen(name)

    probes = probe_providers(advertised=GPU_BUILD, capi_dir=stub_tensorrt, loader=real_but_for_the_driver)
    decision = decide("auto", probes)
    tensorrt = decision.probe("tensorrt")
    assert tensorrt is not None
    assert not tensorrt.loaded
    assert "libnvinfer.so.10" in tensorrt.detail
    assert "cannot open shared object file" in tensorrt.detail
    assert decision.provider == "cpu"  # no CUDA provider library in this capi folder
    assert decision.reason.startswith("tensorrt: libnvinfer.so.10")
    assert "libonnxruntime_providers_cuda.so is absent" in decision.reason


def test_a_missing_path_is_an_oserror_naming_it(tmp_path: Path) -> None:
    with pytest.raises(OSError, match=r"libonnxruntime_providers_cuda\.so"):
        dlopen(str(tmp_path / "libonnxruntime_providers_cuda.so"))
