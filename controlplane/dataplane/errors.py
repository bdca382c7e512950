"""The data plane's errors, translated from each SDK's at the store's boundary.

::

    DataPlaneError
     +-- StoreError             a store could not do what was asked (``transient``: it may work later)
     +-- StagingError           an input could not be staged for a candidate (controlplane/dataplane/stager.py)
          +-- StagingUnavailable   the store or the source failed for a reason that passes: try another candidate
          +-- ChecksumMismatch     the source's bytes are not the ones recorded at upload: never staged anywhere
          +-- PrivateDataRefused   a private task's bytes would go to a non-private target's store

``ValueError`` from :meth:`ObjectStore.put` (the bytes do not hash to the
promised sha256) stays a ``ValueError``: it is the contract's own signal.
"""

from __future__ import annotations

__all__ = [
    "ChecksumMismatch",
    "DataPlaneError",
    "PrivateDataRefused",
    "StagingError",
    "StagingUnavailable",
    "StoreError",
]


class DataPlaneError(Exception):
    """Base of the data plane's errors."""


class StoreError(DataPlaneError):
    """A store refused or could not be reached; ``transient`` when trying again (later, elsewhere) may work."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class StagingError(DataPlaneError):
    """An input of a task could not be staged into a candidate's store; ``code`` is stable, for reasons."""

    code = "staging_failed"
    #: the label of ``fusionplane_staging``
    outcome = "failed"
    #: the scheduler moves on to the next candidate as after a capacity error
    transient = False


class StagingUnavailable(StagingError):
    code = "staging_unavailable"
    outcome = "unavailable"
    transient = True


class ChecksumMismatch(StagingError):
    code = "staging_checksum_mismatch"
    outcome = "checksum_mismatch"


class PrivateDataRefused(StagingError):
    code = "private_data_refused"
    outcome = "private_refused"
