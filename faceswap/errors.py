"""Errors of the face-swap core, each mapped to a documented process exit code.

The tree::

    FaceSwapError                 (exit 70, internal)
    ├── BadInput                  (exit 65) the media, URI or options are unusable
    │   ├── NoFaceFound           the source (or a required target) has no face
    │   ├── UnsupportedMedia      codec/container/format we cannot decode
    │   └── FrameTooLarge         a frame above the 8K limit
    ├── ModelError                (exit 69) a model is missing, corrupt or has the wrong signature
    │   └── ExecutionProviderUnavailable  asked-for EP absent, or a silent fallback
    └── TemporaryFailure          (exit 75) worth retrying: storage throttled, timed out or 5xx
        └── Preempted             stopped by SIGTERM after flushing the checkpoint

Exit codes follow sysexits(3) where a matching one exists (EX_DATAERR,
EX_UNAVAILABLE, EX_TEMPFAIL, EX_SOFTWARE) so that a Kubernetes pod failure
policy or an EC2 user-data script can tell, without parsing logs: 65 never
retry (the input is bad wherever it runs), 69 not on this target (its model
cache, GPU or encoder is unusable; another target may work), 75 resume
elsewhere from the checkpoint.
"""

from __future__ import annotations

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INTERNAL",
    "EXIT_MODEL",
    "EXIT_OK",
    "EXIT_PREEMPTED",
    "BadInput",
    "ExecutionProviderUnavailable",
    "FaceSwapError",
    "FrameTooLarge",
    "ModelError",
    "NoFaceFound",
    "Preempted",
    "TemporaryFailure",
    "UnsupportedMedia",
]

EXIT_OK = 0
EXIT_BAD_INPUT = 65
EXIT_MODEL = 69
EXIT_INTERNAL = 70
EXIT_PREEMPTED = 75


class FaceSwapError(Exception):
    """Base of every error the core raises on purpose."""

    exit_code = EXIT_INTERNAL
    #: short machine-readable kind, used in JSON logs and worker callbacks
    kind = "internal"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: the input field or option the error is about, when there is one
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class BadInput(FaceSwapError):
    """The input media, a URI or an option cannot be used. Never retried."""

    exit_code = EXIT_BAD_INPUT
    kind = "bad_input"


class NoFaceFound(BadInput):
    """No usable face where one is required."""

    kind = "no_face"


class UnsupportedMedia(BadInput):
    """A file that is not an image or video we can decode."""

    kind = "unsupported_media"


class FrameTooLarge(BadInput):
    """A frame larger than the 8K limit."""

    kind = "frame_too_large"


class ModelError(FaceSwapError):
    """A model is missing, fails its checksum, or has the wrong signature."""

    exit_code = EXIT_MODEL
    kind = "model_error"


class ExecutionProviderUnavailable(ModelError):
    """The execution provider asked for is absent, or the session silently fell back."""

    kind = "execution_provider_unavailable"


class TemporaryFailure(FaceSwapError):
    """A failure that another attempt may not meet: throttling, timeouts, 5xx from storage."""

    exit_code = EXIT_PREEMPTED
    kind = "temporary"


class Preempted(TemporaryFailure):
    """Work stopped on SIGTERM; finished segments are committed to the checkpoint."""

    kind = "preempted"
