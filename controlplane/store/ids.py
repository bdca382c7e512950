"""Time-sortable, unguessable ids: a prefix plus 26 Crockford base32 characters (ULID layout).

48 bits of milliseconds since the epoch, then 80 bits that come from
:mod:`secrets` on every call. Ids name objects across tenants (tasks,
attempts, uploads, outputs), so knowing one id must not tell you another:
inside one millisecond the next id is the last one plus a random step of
1 to 2**64 (a plain ULID adds 1, which let a tenant find its neighbours'
tasks by counting). The step keeps ids strictly increasing within a process,
so ordering by id is ordering by creation time (cursor pagination, a task's
decisions, FIFO claiming); across processes ids are a total order that
follows the clock to the millisecond.
"""

from __future__ import annotations

import secrets
import threading
import time

__all__ = ["new_id"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
#: the random step inside one millisecond: as many bits as a guesser must search per neighbour
_STEP_BITS = 64
_lock = threading.Lock()
_last_ms = -1
_last_random = 0


def _encode(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str, *, now_ms: int | None = None) -> str:
    """A new id such as ``tsk_01J9Z3...``; ``now_ms`` defaults to the wall clock."""
    global _last_ms, _last_random
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms:
            # same (or an earlier, if the clock stepped back) millisecond: a random step up
            ms = _last_ms
            rand = _last_random + 1 + secrets.randbits(_STEP_BITS)
            if rand >> _RANDOM_BITS:
                ms, rand = ms + 1, secrets.randbits(_RANDOM_BITS - 1)
        else:
            # the top bit stays clear: room for about 2**15 steps before the millisecond rolls over
            rand = secrets.randbits(_RANDOM_BITS - 1)
        _last_ms, _last_random = ms, rand
    return f"{prefix}_{_encode((ms << _RANDOM_BITS) | rand)}"
