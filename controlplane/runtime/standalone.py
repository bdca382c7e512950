"""A scheduler with no API in front of it: for benches, simulations and tests.

``serve`` builds its scheduler with :func:`controlplane.runtime.build_runtime`;
everything that drives a scheduler by hand (``bench/``, the simulator's
tests, the failover and reconciliation tests) builds it here, so the
defaults such a scheduler needs (no callbacks reachable, no checkpoints) are
written once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from controlplane.policy import Policy
from controlplane.policy_sources import PolicySet
from controlplane.scheduler import Scheduler
from controlplane.store import Store
from providers.base import Provider

__all__ = ["NO_CALLBACKS", "standalone_scheduler"]

#: a callback base nothing listens on: a standalone scheduler's workers are fakes that never call back
NO_CALLBACKS = "http://127.0.0.1:1"


def standalone_scheduler(
    *,
    store: Store,
    policy: Policy | PolicySet | Callable[[], Policy | PolicySet],
    providers: Mapping[str, Provider],
    scheduler_id: str = "standalone",
    callback_base: str = NO_CALLBACKS,
    **options: Any,
) -> Scheduler:
    """A :class:`Scheduler` over ``store`` and ``providers`` with a fixed ``policy`` (or a callable one).

    ``options`` are the scheduler's other keywords (``batch_size``,
    ``signals``, ``clock``, ``planner``, ``metrics``, ``storage``,
    ``grants``, ``checkpoint_root``; the last defaults to None: no
    checkpoints).
    """
    current: Callable[[], Policy | PolicySet]
    if isinstance(policy, Policy | PolicySet):
        fixed = policy

        def current() -> Policy | PolicySet:
            return fixed

    else:
        current = policy
    options.setdefault("checkpoint_root", None)
    return Scheduler(
        store=store,
        policy=current,
        providers=providers,
        callback_base=callback_base,
        scheduler_id=scheduler_id,
        **options,
    )
