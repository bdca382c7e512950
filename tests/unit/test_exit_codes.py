"""One exit-code table: the worker (faceswap.errors), the providers and the scheduler read the same meanings."""

from __future__ import annotations

import faceswap.errors as core
from controlplane.domain import AttemptState
from controlplane.domain.exit_codes import (
    EXIT_CODES,
    EXIT_PREEMPTED,
    TERMINAL_EXIT_CODES,
    RetryClass,
    exit_meaning,
    retry_class,
)
from controlplane.scheduler.outcomes import is_retryable
from providers.local import EXIT_MEANINGS


def _error_classes() -> list[type[core.FaceSwapError]]:
    found, todo = [], [core.FaceSwapError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_the_core_exits_only_with_documented_codes_of_the_right_class() -> None:
    documented = {entry.code: entry.retry for entry in EXIT_CODES}
    assert (core.EXIT_OK, core.EXIT_BAD_INPUT, core.EXIT_MODEL, core.EXIT_INTERNAL, core.EXIT_PREEMPTED) == (
        0,
        65,
        69,
        70,
        75,
    )
    assert documented[core.EXIT_OK] is RetryClass.SUCCESS
    assert documented[core.EXIT_BAD_INPUT] is documented[core.EXIT_MODEL] is RetryClass.TERMINAL
    assert documented[core.EXIT_INTERNAL] is RetryClass.CRASH
    assert documented[core.EXIT_PREEMPTED] is RetryClass.PREEMPTED == retry_class(EXIT_PREEMPTED)
    for cls in _error_classes():
        assert cls.exit_code in documented, cls  # every error the core raises exits with a documented code


def test_providers_and_the_scheduler_read_the_same_table() -> None:
    assert EXIT_MEANINGS[65] == "EX_DATAERR: the spec or the job's input is unusable" == exit_meaning(65)
    assert EXIT_MEANINGS[0] == "succeeded"
    assert EXIT_MEANINGS[2].startswith("usage error: ")
    assert set(EXIT_MEANINGS) == {entry.code for entry in EXIT_CODES}
    assert frozenset({2, 65, 69}) == TERMINAL_EXIT_CODES
    for code in TERMINAL_EXIT_CODES:
        assert not is_retryable(AttemptState.FAILED, code)
    assert is_retryable(AttemptState.FAILED, 70)  # a crash: another attempt may work
    assert is_retryable(AttemptState.FAILED, 1)  # an unhandled crash (not in the table) too
    assert not is_retryable(AttemptState.FAILED, EXIT_PREEMPTED)  # a provider classified it FAILED on purpose
    assert not is_retryable(AttemptState.FAILED, 137)  # killed: the provider says LOST, not FAILED
    assert retry_class(137) is None
    assert exit_meaning(137) is None
