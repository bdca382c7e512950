"""The GPU worker's ONNX Runtime stack is pinned once and installed as pinned (issue 19 item 5).

deploy/worker/requirements-gpu.txt and setup.cfg's ``gpu`` extra hold the same
lines; the GPU Dockerfile installs that file (the build context lets it in);
the CPU and GPU builds of ONNX Runtime are the same release, so what the CPU
tests prove is what runs on the GPU nodes.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "deploy" / "worker" / "requirements-gpu.txt"


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _setup() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    return parser


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][0-9A-Za-z.+-]*)", line)
        assert match, f"not an exact pin: {line!r}"
        pins[match.group(1).lower()] = match.group(2)
    return pins


def test_setup_cfg_gpu_extra_is_the_requirements_file() -> None:
    extra = _lines(_setup()["options.extras_require"]["gpu"])
    assert extra == _lines(REQUIREMENTS.read_text())


def test_every_package_of_the_stack_is_pinned_exactly() -> None:
    pins = _pins(_lines(REQUIREMENTS.read_text()))
    # the libraries the wheel's providers name as NEEDED, each from a pinned package
    assert {
        "onnxruntime-gpu",
        "nvidia-cuda-runtime",
        "nvidia-cublas",
        "nvidia-curand",
        "nvidia-cudnn-cu13",
        "tensorrt-cu13-libs",
    } <= set(pins)
    # one CUDA release line: the toolkit's own packages carry the same version
    assert pins["nvidia-cuda-runtime"] == pins["nvidia-cuda-nvrtc"] == pins["nvidia-nvjitlink"]
    # libnvinfer.so.10 is what onnxruntime-gpu's TensorRT provider links
    assert pins["tensorrt-cu13-libs"].startswith("10.")


def test_cpu_and_gpu_builds_of_onnxruntime_are_the_same_release() -> None:
    install = _pins([line for line in _lines(_setup()["options"]["install_requires"]) if "onnxruntime" in line])
    gpu = _pins(_lines(REQUIREMENTS.read_text()))
    assert install["onnxruntime"] == gpu["onnxruntime-gpu"]


def test_the_gpu_image_installs_the_pinned_file_and_the_context_carries_it() -> None:
    dockerfile = (REPO / "deploy" / "worker" / "Dockerfile").read_text()
    assert "-r /src/deploy/worker/requirements-gpu.txt" in dockerfile
    assert "pip uninstall -y onnxruntime" in dockerfile
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    # deploy/ is out of the context, with this one file let back in after it
    assert "deploy" in ignore
    assert ignore.index("!deploy/worker/requirements-gpu.txt") > ignore.index("deploy")


def test_the_device_pack_carries_the_image_s_onnxruntime_and_every_wheel_by_hash() -> None:
    """bench/gpu_device.sh measures what the image runs: the same onnxruntime-gpu, each wheel checked by sha256."""
    lines = _lines((REPO / "bench" / "gpu_device-requirements.txt").read_text())
    pins = _pins([line.split(" --hash=", 1)[0] for line in lines])
    assert pins["onnxruntime-gpu"] == _pins(_lines(REQUIREMENTS.read_text()))["onnxruntime-gpu"]
    install = _pins([line for line in _lines(_setup()["options"]["install_requires"]) if "py-consul" in line])
    assert pins["py-consul"] == install["py-consul"]
    assert all(re.search(r" --hash=sha256:[0-9a-f]{64}", line) for line in lines)
