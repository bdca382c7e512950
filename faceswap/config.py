"""The worker's settings from its environment: the one module of the face-swap core that reads it.

Read when they are used (a worker's environment is set before it starts, but
tests and ``fusionctl swap`` set it on the fly), each with its default.

| variable | setting |
|---|---|
| ``FUSIONPLANE_MODEL_DIR`` | :attr:`WorkerSettings.model_dir` (default ``~/.cache/fusionplane/models``) |
| ``FUSIONPLANE_TRT_CACHE`` | :attr:`WorkerSettings.trt_cache` (default ``~/.cache/fusionplane/trt``) |
| ``FUSIONPLANE_CUDNN_ALGO_SEARCH`` | :attr:`WorkerSettings.cudnn_conv_algo_search` (default ``HEURISTIC``) |
| ``FUSIONPLANE_FFMPEG`` | :attr:`WorkerSettings.ffmpeg` (default: ``ffmpeg`` on the ``PATH``) |
| ``FUSIONPLANE_FFPROBE`` | :attr:`WorkerSettings.ffprobe` (default: ``ffprobe`` on the ``PATH``) |
| ``AZURE_STORAGE_CONNECTION_STRING`` | :attr:`WorkerSettings.blob_connection_string` (az:// with its account's key) |
| ``AZURE_STORAGE_ACCOUNT``, ``AZURE_STORAGE_KEY`` | :attr:`WorkerSettings.blob_account_key` (the same, as two values) |

Without a key for an account, az:// goes through ``DefaultAzureCredential``
(the VM's managed identity), which reads its own variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_CUDNN_ALGO_SEARCH", "DEFAULT_MODEL_DIR", "DEFAULT_TRT_CACHE", "WorkerSettings"]

DEFAULT_MODEL_DIR = "~/.cache/fusionplane/models"
DEFAULT_TRT_CACHE = "~/.cache/fusionplane/trt"
DEFAULT_CUDNN_ALGO_SEARCH = "HEURISTIC"


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """Where the worker keeps its models and TensorRT engines, and which ffmpeg it runs."""

    #: the ONNX models, downloaded once and checked by sha256
    model_dir: Path
    #: TensorRT engines and timing caches, kept across runs
    trt_cache: Path
    #: the CUDA provider's cuDNN convolution algorithm search, as given (validated where it is used)
    cudnn_conv_algo_search: str = DEFAULT_CUDNN_ALGO_SEARCH
    #: ffmpeg and ffprobe as configured (None: found on the ``PATH``)
    ffmpeg: str | None = None
    ffprobe: str | None = None
    #: an Azure Storage connection string (account, key, Blob endpoint); kept out of reprs and logs
    blob_connection_string: str | None = field(default=None, repr=False)
    #: ``(account, key)`` for Blob storage, when given as two variables
    blob_account_key: tuple[str, str] | None = field(default=None, repr=False)

    def ffmpeg_binary(self, name: str) -> str | None:
        """The configured path of ``ffmpeg`` or ``ffprobe`` (None: not configured)."""
        return self.ffprobe if name == "ffprobe" else self.ffmpeg if name == "ffmpeg" else None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        env = os.environ if env is None else env
        return cls(
            model_dir=Path(env.get("FUSIONPLANE_MODEL_DIR", DEFAULT_MODEL_DIR)).expanduser(),
            trt_cache=Path(env.get("FUSIONPLANE_TRT_CACHE", DEFAULT_TRT_CACHE)).expanduser(),
            cudnn_conv_algo_search=env.get("FUSIONPLANE_CUDNN_ALGO_SEARCH", "").strip() or DEFAULT_CUDNN_ALGO_SEARCH,
            ffmpeg=env.get("FUSIONPLANE_FFMPEG") or None,
            ffprobe=env.get("FUSIONPLANE_FFPROBE") or None,
            blob_connection_string=env.get("AZURE_STORAGE_CONNECTION_STRING") or None,
            blob_account_key=(
                (env["AZURE_STORAGE_ACCOUNT"], env["AZURE_STORAGE_KEY"])
                if env.get("AZURE_STORAGE_ACCOUNT") and env.get("AZURE_STORAGE_KEY")
                else None
            ),
        )
