"""A local input is there and holds the media it should, checked at submit from its first bytes.

Runs after ``check_input_uri`` (``api/schemas.py``) has put the path inside
the caller's own input folder, so "no such file" tells a tenant nothing about
anyone else's files; a path outside stays "outside your input folder",
whether it exists or not. Remote inputs are the worker's to read and check.
"""

from __future__ import annotations

from controlplane.api.schemas import FieldError
from controlplane.domain.tenant_storage import local_path
from faceswap.containers import check_content
from faceswap.errors import UnsupportedMedia

__all__ = ["check_local_content"]


def check_local_content(uri: str, *, given: str, field: str, wanted: str) -> None:
    """Refuse (:class:`FieldError` on ``field``) a missing file, or one that is no ``image`` / ``video``.

    ``uri`` is the checked, resolved input; ``given`` is what the caller sent,
    for the message.
    """
    path = local_path(uri)
    if path is None:
        return
    try:
        check_content(path, field=field, wanted=wanted)
    except FileNotFoundError:
        raise FieldError(f"no such file: {given}", field=field) from None
    except UnsupportedMedia as exc:
        raise FieldError(exc.message, field=field) from None
    except OSError:
        raise FieldError(f"{given} is not a file that can be read", field=field) from None
