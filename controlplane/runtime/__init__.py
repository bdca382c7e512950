"""The control plane put together: one builder fed by :class:`controlplane.config.Settings`.

``builder`` builds the whole runtime ``fusionctl serve`` runs
(:func:`build_runtime` returns a :class:`Runtime`: store, policy in force,
signal hub, providers, scheduler, leader lease and jobs, API); ``policies``
loads the start-up policy and watches its source; ``signals`` chooses the
pollers and their schedules; ``providers`` builds the local and cloud
providers; ``jobs`` schedules the periodic work; ``dev_token`` mints the
development token; ``standalone`` builds a scheduler without an API for
benches and tests. This layer sits above the API and the scheduler and
below the CLI.
"""

from controlplane.runtime.builder import Runtime, StartupError, build_runtime, check_settings, prepare_folders
from controlplane.runtime.standalone import NO_CALLBACKS, standalone_scheduler

__all__ = [
    "NO_CALLBACKS",
    "Runtime",
    "StartupError",
    "build_runtime",
    "check_settings",
    "prepare_folders",
    "standalone_scheduler",
]
