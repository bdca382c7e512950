"""What the providers repeat, written once: the targets filter, the attempt-id pattern, the client
cache, a bounded memory of attempt ids, and the base of every target settings model.

Every provider package may import this module (and ``providers.base`` /
``providers.bootstrap``), never another provider: the ``providers-independent``
import contract in setup.cfg holds them apart.

Target settings: each cloud provider describes its target's ``settings`` with
a :class:`TargetSettings` model (strict types, unknown keys refused) and
exposes ``validate_settings(settings) -> list[(path, message)]`` built with
:func:`settings_problems`. The places that load a policy (``fusionctl policy
validate`` / ``push``, start-up, every Consul or file reload) run it through
:func:`controlplane.policy.checks.require_launchable`, which names each
problem by its JSON path (``targets[2].settings.namespace``), so a bad
setting is refused before the policy is accepted instead of failing tasks
at launch.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from controlplane.domain import Target
from controlplane.domain.exit_codes import EXIT_CODES, exit_meaning

__all__ = [
    "ATTEMPT_ID",
    "BoundedMemory",
    "ClientCache",
    "EXIT_MEANINGS",
    "ImageReference",
    "NonBlank",
    "SettingsProblem",
    "TargetSettings",
    "TargetsSource",
    "own_targets",
    "settings_problems",
]

#: the worker's exit codes and what they mean, as local and kubernetes report them
#: (one table: controlplane.domain.exit_codes)
EXIT_MEANINGS: dict[int, str] = {entry.code: exit_meaning(entry.code) or entry.meaning for entry in EXIT_CODES}

#: an attempt id as the providers accept it: a name for files, tags and resource names
ATTEMPT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

#: a provider's ``targets``: the policy's targets, or a function returning the current ones (reloads)
TargetsSource = Iterable[Target] | Callable[[], Iterable[Target]]

#: (path inside ``settings``, what is wrong), e.g. ``("namespace", "must be a DNS label, not 'A_B'")``
SettingsProblem = tuple[str, str]

_K = TypeVar("_K")
_C = TypeVar("_C")


def own_targets(targets: TargetsSource, provider: str) -> list[Target]:
    """The current targets of ``provider`` (a callable source is asked again each time)."""
    current = targets() if callable(targets) else targets
    return [t for t in current if t.provider == provider]


class ClientCache(Generic[_K, _C]):
    """One SDK client per key (region, subscription, cluster), made on first use, closed together.

    ``build`` runs under the cache's lock, so two threads never build the
    same client twice. ``close_all`` hands back what was built (the caller
    knows how to close its SDK's clients) and empties the cache.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._clients: dict[_K, _C] = {}

    def get(self, key: _K, build: Callable[[_K], _C]) -> _C:
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = build(key)
            return client

    def close_all(self) -> list[_C]:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        return clients


class BoundedMemory(Generic[_C]):
    """A bounded insertion-ordered map of attempt ids (the oldest are forgotten first).

    A control plane runs for months: what a provider remembers about the
    attempts it saw (where each lives, which it cancelled) must not grow
    without bound.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, _C] = OrderedDict()
        self._lock = threading.Lock()  # status, launch and cancel may run on several threads

    def put(self, key: str, value: _C) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, key: str) -> _C | None:
        with self._lock:
            return self._items.get(key)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items


# -- target settings ------------------------------------------------------------------------------


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty string")
    return value


def _image_reference(value: str) -> str:
    if not value.strip():
        raise ValueError("must be an image reference (a non-empty string)")
    return value


#: a string with something in it (not "" nor only spaces)
NonBlank = Annotated[str, AfterValidator(_non_blank)]
#: ``settings.worker_image`` on every backend (bootstrap.worker_image applies it)
ImageReference = Annotated[str, AfterValidator(_image_reference)]


class TargetSettings(BaseModel):
    """The base of every provider's settings model: strict types, unknown keys refused.

    ``prometheus_selector`` is read by the signal hub
    (controlplane/signals/prometheus.py) for a target of any provider, so
    every model accepts it; its form is the signal source's to check.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    prometheus_selector: str | None = None


def _path(location: Sequence[int | str]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _message(error: Mapping[str, Any], provider: str) -> str:
    if error["type"] == "extra_forbidden":
        return f"is not a setting of {provider} targets (docs/providers.md lists them)"
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    return f"{str(error['msg'])[:1].lower()}{str(error['msg'])[1:]}"


def settings_problems(
    model: type[TargetSettings], settings: Mapping[str, Any], *, provider: str
) -> list[SettingsProblem]:
    """Every problem ``model`` finds in ``settings``, as (path inside settings, message), in key order."""
    # a key given as null is the same as one left out (the providers read settings with .get)
    present = {key: value for key, value in settings.items() if value is not None}
    try:
        model.model_validate(present)
    except ValidationError as exc:
        return [(_path(error["loc"]), _message(error, provider)) for error in exc.errors()]
    return []
