"""Releasing: delete the backend resources of attempts that have ended, so nothing goes on costing money."""

from __future__ import annotations

from controlplane.domain import AttemptState
from controlplane.scheduler.base import SchedulerBase

__all__ = ["Releasing"]


class Releasing(SchedulerBase):
    def release_finished(self) -> int:
        """Delete the backend resources of attempts that ended since the last call; returns how many.

        An attempt usually ends by its worker's callback, which the API
        records without touching the backend. Left alone, the resource may
        go on costing money: an Azure VM that powered itself off stays
        allocated and billed, a Kubernetes pod stuck pulling its image holds
        its GPU. ``cancel`` of something already gone is success, so this is
        safe to repeat. The cursor starts at the newest event when the
        scheduler starts; resources of attempts that ended before are
        reconciliation's job (``list_owned``). The local provider keeps its
        attempt directories (logs), so it is skipped.
        """
        if self._release_cursor is None:
            self._release_cursor = self.store.last_event_id()
            return 0
        released = 0
        # cancels that failed before, first; a provider that fails once is not asked again this round
        failing: set[str] = set()
        for attempt_id, provider_name in list(self._release_retries.items()):
            if provider_name in failing:
                continue
            if self._stop_resource(attempt_id, provider_name):
                del self._release_retries[attempt_id]
                released += 1
            else:
                failing.add(provider_name)
        for finished in self.store.finished_attempts_after(self._release_cursor):
            provider = self.providers.get(finished.provider)
            # a cancelled attempt (a hedge's loser) may still run wherever it is, the local provider included
            if provider is not None and (finished.provider != "local" or finished.state == AttemptState.CANCELLED):
                if finished.provider in failing or not self._stop_resource(finished.attempt_id, finished.provider):
                    # kept for the next round; attempts on other providers are not held up behind it
                    failing.add(finished.provider)
                    self._release_retries[finished.attempt_id] = finished.provider
                else:
                    released += 1
            self._release_cursor = finished.event_id
        return released
