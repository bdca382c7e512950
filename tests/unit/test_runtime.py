"""Execution providers and sessions: the CPU path, the load-checked choice, CUDA options, the session cache."""

from __future__ import annotations

import logging
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort
import pytest

from faceswap import runtime
from faceswap.errors import ExecutionProviderUnavailable, ModelError
from faceswap.gpu_probe import ProbeResult, ProviderDecision
from faceswap.models import ModelStore
from faceswap.runtime import (
    EXECUTION_PROVIDERS,
    ExecutionConfig,
    available_execution_providers,
    choose_execution_provider,
    clear_provider_cache,
    clear_session_cache,
    create_session,
    resolve_execution_provider,
    tensorrt_cache_dir,
)

ORT_NAMES = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


@pytest.fixture(scope="module")
def yunet_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ModelStore(tmp_path_factory.mktemp("no-models")).verified_path("yunet_2023mar")


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    clear_provider_cache()
    clear_session_cache()
    yield
    clear_provider_cache()
    clear_session_cache()


def _present(name: str) -> bool:
    return ORT_NAMES[name] in ort.get_available_providers()


def test_available_providers_include_cpu_and_only_what_ort_has() -> None:
    available = available_execution_providers()
    assert "cpu" in available
    assert available[-1] == "cpu"  # best first, CPU last
    assert len(set(available)) == len(available)
    for name in available:
        assert _present(name)
    for name in ("tensorrt", "cuda"):
        assert (name in available) == _present(name)
    order = ["tensorrt", "cuda", "cpu"]
    assert available == [n for n in order if n in available]


def test_auto_resolves_to_the_best_present_provider() -> None:
    best = next(n for n in ("tensorrt", "cuda", "cpu") if _present(n))
    assert resolve_execution_provider("auto") == best
    if not _present("cuda") and not _present("tensorrt"):
        assert resolve_execution_provider("auto") == "cpu"


def test_cpu_resolves_to_cpu() -> None:
    assert resolve_execution_provider("cpu") == "cpu"


@pytest.mark.parametrize("provider", ["tensorrt", "cuda"])
def test_absent_gpu_provider_is_refused(provider: str) -> None:
    if _present(provider):
        assert resolve_execution_provider(provider) == provider
        pytest.skip(f"{provider} is available in this onnxruntime build")
    with pytest.raises(ExecutionProviderUnavailable) as info:
        resolve_execution_provider(provider)
    assert info.value.field == "execution_provider"
    assert provider in str(info.value)
    assert "cpu" in str(info.value)  # says what is available instead
    assert isinstance(info.value, ModelError)
    assert info.value.exit_code == 69


@pytest.mark.parametrize("provider", ["tensorrt", "cuda"])
def test_create_session_on_an_absent_provider_fails_before_loading(yunet_path: Path, provider: str) -> None:
    if _present(provider):
        pytest.skip(f"{provider} is available in this onnxruntime build")
    with pytest.raises(ExecutionProviderUnavailable) as info:
        create_session(yunet_path, ExecutionConfig(provider=provider))
    assert info.value.field == "execution_provider"


@pytest.mark.parametrize("provider", ["opencl", "CPU", "", "gpu"])
def test_unknown_provider_names_are_errors(provider: str) -> None:
    with pytest.raises(ExecutionProviderUnavailable) as info:
        ExecutionConfig(provider=provider)
    assert info.value.field == "execution_provider"
    for name in EXECUTION_PROVIDERS:
        assert name in str(info.value)
    with pytest.raises(ExecutionProviderUnavailable):
        resolve_execution_provider(provider)


def test_negative_cpu_threads_are_refused() -> None:
    with pytest.raises(ModelError) as info:
        ExecutionConfig(cpu_threads=-1)
    assert info.value.field == "cpu_threads"


@pytest.mark.parametrize("provider", ["cpu", "auto"])
def test_create_session_on_the_bundled_yunet_runs_on_cpu(yunet_path: Path, provider: str) -> None:
    if provider == "auto" and (_present("cuda") or _present("tensorrt")):
        pytest.skip("auto picks a GPU provider here")
    session = create_session(yunet_path, ExecutionConfig(provider=provider, cpu_threads=1))
    assert session.get_providers()[0] == "CPUExecutionProvider"
    (spec,) = session.get_inputs()
    assert list(spec.shape) == [1, 3, 640, 640]
    outputs = session.run(None, {spec.name: np.zeros((1, 3, 640, 640), dtype=np.float32)})
    assert len(outputs) == 12


def test_create_session_on_a_broken_file_is_a_model_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07 definitely not a model")
    with pytest.raises(ModelError) as info:
        create_session(broken, ExecutionConfig(provider="cpu"))
    assert "broken.onnx" in str(info.value)
    assert info.value.field == "model"


@pytest.mark.filterwarnings("ignore:Specified provider")  # onnxruntime's own warning about the absent EP
def test_a_silent_fallback_is_caught(
    yunet_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if _present("cuda"):
        pytest.skip("CUDA is present: onnxruntime would not fall back")
    # pretend CUDA's libraries loaded: onnxruntime then quietly runs the session on the CPU
    pretend = ProviderDecision("cuda", "cuda", "requested; cuda: loaded", ())
    monkeypatch.setattr(runtime, "choose_execution_provider", lambda requested: pretend)
    with pytest.raises(ExecutionProviderUnavailable) as info:
        create_session(yunet_path, ExecutionConfig(provider="cuda"))
    assert info.value.field == "execution_provider"
    assert "CUDAExecutionProvider" in str(info.value)
    assert "fallback" in str(info.value)
    # allowed explicitly, it warns and carries on on the CPU
    with caplog.at_level(logging.WARNING, logger="faceswap.runtime"):
        session = create_session(yunet_path, ExecutionConfig(provider="cuda", allow_fallback=True))
    assert session.get_providers()[0] == "CPUExecutionProvider"
    assert any("fallback" in record.getMessage() for record in caplog.records)


def test_tensorrt_cache_dir_is_keyed_and_filesystem_safe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_tensorrt_version", lambda: "10.9.0")
    monkeypatch.setattr(runtime, "_gpu_identity", lambda device_id=0: "NVIDIA H100 80GB HBM3, 9.0 / rev:a1")
    h100 = tensorrt_cache_dir(tmp_path)
    assert h100.parent == tmp_path
    assert SAFE_NAME.match(h100.name), h100.name
    assert h100.name not in (".", "..")
    assert ort.__version__ in h100.name
    assert "10.9.0" in h100.name
    assert "H100" in h100.name
    monkeypatch.setattr(runtime, "_gpu_identity", lambda device_id=0: "NVIDIA L4, 8.9")
    l4 = tensorrt_cache_dir(tmp_path)
    assert SAFE_NAME.match(l4.name)
    assert l4 != h100
    monkeypatch.setattr(runtime, "_tensorrt_version", lambda: "10.12.0")
    assert tensorrt_cache_dir(tmp_path) != l4


def test_tensorrt_cache_dir_on_this_machine(tmp_path: Path) -> None:
    path = tensorrt_cache_dir(tmp_path)
    assert path.parent == tmp_path
    assert SAFE_NAME.match(path.name), path.name
    assert ort.__version__ in path.name
    assert not path.exists()  # only computed, never created here


def test_gpu_identity_reads_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'Tesla T4, 7.5'\n", encoding="utf-8")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(runtime.shutil, "which", lambda name: str(fake) if name == "nvidia-smi" else None)
    assert runtime._gpu_identity() == "Tesla T4, 7.5"
    fake.write_text("#!/bin/sh\nexit 9\n", encoding="utf-8")
    assert runtime._gpu_identity() == "unknown-gpu"
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)
    assert runtime._gpu_identity() == "unknown-gpu"


NO_NVINFER = "libnvinfer.so.10: cannot open shared object file: No such file or directory"
GPU_NODE_WITHOUT_TENSORRT = (
    ProbeResult("tensorrt", False, NO_NVINFER),
    ProbeResult("cuda", True, "loaded"),
    ProbeResult("cpu", True, "built in"),
)


def test_the_tensorrt_cache_key_reads_the_version_the_probe_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = (ProbeResult("tensorrt", True, "loaded (TensorRT 10.13.2)", "10.13.2"), *GPU_NODE_WITHOUT_TENSORRT[1:])
    monkeypatch.setattr(runtime, "provider_probes", lambda: loaded)
    assert runtime._tensorrt_version() == "10.13.2"
    monkeypatch.setattr(runtime, "provider_probes", lambda: GPU_NODE_WITHOUT_TENSORRT)
    assert runtime._tensorrt_version() == "unknown"


def test_auto_on_a_gpu_node_without_tensorrt_is_cuda_with_the_reason_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def probes() -> tuple[ProbeResult, ...]:
        calls.append(1)
        return GPU_NODE_WITHOUT_TENSORRT

    monkeypatch.setattr(runtime, "provider_probes", probes)
    with caplog.at_level(logging.INFO, logger="faceswap.runtime"):
        decision = choose_execution_provider("auto")
        assert choose_execution_provider("auto") is decision  # remembered for the process
    assert decision.provider == "cuda"
    assert decision.reason == f"tensorrt: {NO_NVINFER}; cuda: loaded"
    assert resolve_execution_provider("auto") == "cuda"
    assert len(calls) == 1
    chosen = [r for r in caplog.records if getattr(r, "event", None) == "execution_provider_chosen"]
    assert len(chosen) == 1
    assert chosen[0].__dict__["execution_provider"] == "cuda"
    assert chosen[0].__dict__["execution_provider_reason"] == decision.reason


def test_explicit_tensorrt_whose_library_does_not_load_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "provider_probes", lambda: GPU_NODE_WITHOUT_TENSORRT)
    with pytest.raises(ExecutionProviderUnavailable) as info:
        create_session(Path("never-read.onnx"), ExecutionConfig(provider="tensorrt"))
    assert "libnvinfer.so.10" in str(info.value)
    assert "silent fallback" not in str(info.value)
    assert info.value.exit_code == 69
    assert info.value.field == "execution_provider"


@pytest.mark.skipif(_present("tensorrt"), reason="a GPU build of onnxruntime")
def test_explicit_tensorrt_on_this_cpu_build_says_the_provider_library_is_absent() -> None:
    with pytest.raises(ExecutionProviderUnavailable) as info:
        resolve_execution_provider("tensorrt")
    assert "libonnxruntime_providers_tensorrt.so is absent from this onnxruntime build" in str(info.value)


class FakeSession:
    """Records what create_session gave InferenceSession; runs on whatever was asked first."""

    made: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, path: str, *, sess_options: Any, providers: list[Any]) -> None:
        self.providers = providers
        FakeSession.made.append({"path": path, "providers": providers})

    def get_providers(self) -> list[str]:
        return [p[0] if isinstance(p, tuple) else p for p in self.providers]

    def get_inputs(self) -> list[Any]:
        return []

    def run(self, *_args: Any) -> list[Any]:
        return []


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    loaded = (ProbeResult("tensorrt", True, "loaded (TensorRT 10.9.0)", "10.9.0"), *GPU_NODE_WITHOUT_TENSORRT[1:])
    monkeypatch.setattr(runtime, "provider_probes", lambda: loaded)
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    monkeypatch.setattr(runtime, "_gpu_identity", lambda device_id=0: f"GPU{device_id}")
    monkeypatch.delenv("FUSIONPLANE_CUDNN_ALGO_SEARCH", raising=False)
    FakeSession.made = []
    return FakeSession.made


def _model(tmp_path: Path, name: str = "m.onnx") -> Path:
    path = tmp_path / name
    path.write_bytes(b"model bytes")
    return path


def test_cuda_gets_its_options_heuristic_by_default(fake_gpu: list[dict[str, Any]], tmp_path: Path) -> None:
    create_session(_model(tmp_path), ExecutionConfig(provider="cuda", trt_cache_root=tmp_path / "trt"))
    (made,) = fake_gpu
    assert made["providers"] == [
        (
            "CUDAExecutionProvider",
            {
                "device_id": "0",
                "cudnn_conv_algo_search": "HEURISTIC",
                "arena_extend_strategy": "kSameAsRequested",
                "do_copy_in_default_stream": "1",
            },
        ),
        "CPUExecutionProvider",
    ]


def test_tensorrt_keeps_cuda_with_the_same_options_second(
    fake_gpu: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUSIONPLANE_CUDNN_ALGO_SEARCH", "EXHAUSTIVE")
    config = ExecutionConfig(provider="auto", device_id=1, trt_cache_root=tmp_path / "trt")
    create_session(_model(tmp_path), config)
    (made,) = fake_gpu
    (trt_name, trt_options), (cuda_name, cuda_options), cpu = made["providers"]
    assert (trt_name, cuda_name, cpu) == ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    assert trt_options["device_id"] == 1
    assert trt_options["trt_engine_cache_path"] == str(tensorrt_cache_dir(tmp_path / "trt", device_id=1))
    assert "trt10.9.0-GPU1" in trt_options["trt_engine_cache_path"]
    assert cuda_options["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert cuda_options["device_id"] == "1"


def test_the_session_cache_shares_a_session_for_the_same_model_and_config(
    fake_gpu: list[dict[str, Any]], tmp_path: Path
) -> None:
    model = _model(tmp_path)
    config = ExecutionConfig(provider="cuda", trt_cache_root=tmp_path)
    first = create_session(model, config)
    assert create_session(model, ExecutionConfig(provider="cuda", trt_cache_root=tmp_path)) is first
    assert create_session(model, ExecutionConfig(provider="auto", trt_cache_root=tmp_path)) is not first  # tensorrt
    assert len(fake_gpu) == 2
    other = create_session(
        model, ExecutionConfig(provider="cuda", trt_cache_root=tmp_path, cudnn_conv_algo_search="DEFAULT")
    )
    assert other is not first
    assert create_session(_model(tmp_path, "n.onnx"), config) is not first
    assert len(fake_gpu) == 4
    clear_session_cache()
    assert create_session(model, config) is not first


def test_a_replaced_model_file_gets_a_new_session(yunet_path: Path, tmp_path: Path) -> None:
    model = tmp_path / "yunet.onnx"
    model.write_bytes(yunet_path.read_bytes())
    config = ExecutionConfig(provider="cpu", cpu_threads=1)
    first = create_session(model, config)
    assert create_session(model, config) is first
    if not (_present("cuda") or _present("tensorrt")):
        assert create_session(model, ExecutionConfig(provider="auto", cpu_threads=1)) is first  # auto chose cpu
    assert create_session(model, ExecutionConfig(provider="cpu", cpu_threads=2)) is not first
    replacement = tmp_path / "new.onnx"
    replacement.write_bytes(yunet_path.read_bytes())
    replacement.replace(model)
    assert create_session(model, config) is not first


def test_a_missing_model_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        create_session(tmp_path / "gone.onnx", ExecutionConfig(provider="cpu"))
    assert info.value.field == "model"
    assert "gone.onnx" in str(info.value)


def test_a_rewritten_model_is_its_own_session_warmed_with_its_input_type(yunet_path: Path, tmp_path: Path) -> None:
    from faceswap.detector_graph import batched_uint8_model_bytes

    model = tmp_path / "yunet.onnx"
    model.write_bytes(yunet_path.read_bytes())
    config = ExecutionConfig(provider="cpu", cpu_threads=1)
    published = create_session(model, config)
    rewritten = create_session(model, config, rewrite=batched_uint8_model_bytes)
    assert rewritten is not published
    assert create_session(model, config, rewrite=batched_uint8_model_bytes) is rewritten
    assert rewritten.get_inputs()[0].type == "tensor(uint8)"  # the warm-up fed it uint8 zeros, not int64


def test_a_rewrite_that_refuses_the_model_keeps_its_own_error(tmp_path: Path) -> None:
    model = _model(tmp_path)

    def refuse(path: Path) -> bytes:
        raise ModelError(f"{path.name} is not a detector", field="detector")

    with pytest.raises(ModelError) as caught:
        create_session(model, ExecutionConfig(provider="cpu"), rewrite=refuse)
    assert caught.value.field == "detector"
