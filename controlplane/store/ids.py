"""Time-sortable ids: a prefix plus 26 Crockford base32 characters (ULID layout).

48 bits of milliseconds since the epoch, then 80 random bits. Within one
process ids are strictly increasing even inside one millisecond (the random
part is incremented), so ordering by id is ordering by creation time, which
is what cursor pagination relies on.
"""

from __future__ import annotations

import secrets
import threading
import time

__all__ = ["new_id"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
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
            # same (or an earlier, if the clock stepped back) millisecond: keep increasing
            ms = _last_ms
            rand = _last_random + 1
            if rand >> _RANDOM_BITS:
                ms, rand = ms + 1, secrets.randbits(_RANDOM_BITS - 1)
        else:
            # leave headroom so the increments above never overflow in practice
            rand = secrets.randbits(_RANDOM_BITS - 1)
        _last_ms, _last_random = ms, rand
    return f"{prefix}_{_encode((ms << _RANDOM_BITS) | rand)}"
