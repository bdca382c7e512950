"""Execution providers and sessions: the CPU path, and no silent fallback."""

from __future__ import annotations

import logging
import re
import stat
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from faceswap import runtime
from faceswap.errors import ExecutionProviderUnavailable, ModelError
from faceswap.models import ModelStore
from faceswap.runtime import (
    EXECUTION_PROVIDERS,
    ExecutionConfig,
    available_execution_providers,
    create_session,
    resolve_execution_provider,
    tensorrt_cache_dir,
)

ORT_NAMES = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


@pytest.fixture(scope="module")
def yunet_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ModelStore(tmp_path_factory.mktemp("no-models")).verified_path("yunet_2023mar")


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
    # pretend CUDA is installed: onnxruntime then quietly runs the session on the CPU
    monkeypatch.setattr(runtime, "resolve_execution_provider", lambda requested: "cuda")
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
    monkeypatch.setattr(runtime, "_gpu_identity", lambda: "NVIDIA H100 80GB HBM3, 9.0 / rev:a1")
    h100 = tensorrt_cache_dir(tmp_path)
    assert h100.parent == tmp_path
    assert SAFE_NAME.match(h100.name), h100.name
    assert h100.name not in (".", "..")
    assert ort.__version__ in h100.name
    assert "10.9.0" in h100.name
    assert "H100" in h100.name
    monkeypatch.setattr(runtime, "_gpu_identity", lambda: "NVIDIA L4, 8.9")
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
