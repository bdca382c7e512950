"""GPU utilisation and GPU memory in use per target, from Prometheus (docs/signals.md).

For every target of the policy, one instant query per signal:

* ``gpu_utilization/<target>`` (0..1): the target's own ``gpu_utilization_query``
  when it has one, else the average of DCGM's ``DCGM_FI_DEV_GPU_UTIL``
  (percent) over the target's GPUs and over ``window``, divided by 100;
* ``gpu_memory_used/<target>`` (0..1): the average over the same GPUs and
  window of ``FB_USED / (FB_USED + FB_FREE)``.

A target's series are picked by ``settings["prometheus_selector"]`` (label
matchers such as ``cluster="onprem"``); without it, ``local`` and
``kubernetes`` targets use ``fusionplane_target="<name>"`` and cloud targets
get no DCGM query at all (nothing exports DCGM there until a worker runs).

Only a single finite number within 0..1 becomes a sample. Everything else
(no data, NaN, several series, a percentage, a range vector, a query
Prometheus rejects) is a ``problem`` naming the signal and the query, and the
signal is left missing, which the planner reads as "unknown", never as "at
peak". The poll raises :class:`PrometheusUnavailable` only when Prometheus
answered nothing at all (down, too slow, not speaking its API).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from controlplane.domain import GPU_UTILIZATION_SOURCE, SignalSample, Target
from controlplane.signals.base import GPU_MEMORY_SOURCE, PollResult, Wanted

__all__ = [
    "DEFAULT_SELECTOR_PROVIDERS",
    "DEFAULT_TTL_SECONDS",
    "DEFAULT_WINDOW",
    "FRACTION_TOLERANCE",
    "SELECTOR_SETTING",
    "SignalQuery",
    "PrometheusSource",
    "PrometheusUnavailable",
    "default_memory_query",
    "default_utilization_query",
    "target_selector",
]

#: the target setting holding the label matchers of its DCGM series
SELECTOR_SETTING = "prometheus_selector"
#: providers whose GPUs are always there, so an unconfigured target still gets the DCGM queries
DEFAULT_SELECTOR_PROVIDERS: tuple[str, ...] = ("local", "kubernetes")
DEFAULT_WINDOW = "2m"
DEFAULT_TTL_SECONDS = 60.0
#: how far past 0..1 a value may be and still count as rounding (then it is clamped)
FRACTION_TOLERANCE = 1e-6

# PromQL durations, compound ones included ("90s", "1m30s")
_DURATION = re.compile(r"^(?:[0-9]+(?:ms|s|m|h|d|w|y))+$")
# the only way 0.7.2 reports the HTTP status of a refused query is in its message
_STATUS = re.compile(r"^HTTP Status Code (\d{3})\b")
# what the query API answers for a query it cannot parse (bad_data) or evaluate (execution)
_QUERY_ERRORS = frozenset({400, 422})
# a call with less time than this left cannot even connect; better to say so than to time out
_MIN_CALL_S = 0.01
_PROBLEM_TEXT = 300


class PrometheusUnavailable(RuntimeError):
    """Prometheus gave no usable answer to any query of a poll (down, too slow, or not Prometheus)."""


def default_utilization_query(selector: str, window: str = DEFAULT_WINDOW) -> str:
    """Mean GPU utilisation (0..1) of the GPUs matching ``selector`` over ``window``."""
    return f"avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{{{selector}}}[{window}])) / 100"


def default_memory_query(selector: str, window: str = DEFAULT_WINDOW) -> str:
    """Mean fraction (0..1) of framebuffer memory in use on the GPUs matching ``selector``."""
    used = f"avg_over_time(DCGM_FI_DEV_FB_USED{{{selector}}}[{window}])"
    free = f"avg_over_time(DCGM_FI_DEV_FB_FREE{{{selector}}}[{window}])"
    # each GPU's own fraction, then the mean, so a large card does not outweigh the rest
    return f"avg({used} / ({used} + {free}))"


def target_selector(target: Target) -> str | None:
    """The label matchers of ``target``'s DCGM series, or ``None`` when it has none.

    Raises ``ValueError`` for a setting that cannot go between braces.
    """
    raw = target.settings.get(SELECTOR_SETTING)
    if raw is None:
        if target.provider in DEFAULT_SELECTOR_PROVIDERS:
            return f'fusionplane_target="{_label_value(target.name)}"'
        return None
    if not isinstance(raw, str) or not raw.strip() or any(c in raw for c in "{}\n"):
        raise ValueError(f'settings.{SELECTOR_SETTING} must be label matchers such as cluster="onprem", got {raw!r}')
    return raw.strip()


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


@dataclass(frozen=True)
class SignalQuery:
    """One instant query of a poll, and the sample it becomes (``source/target``)."""

    source: str
    target: str
    promql: str

    def problem(self, reason: str) -> str:
        return f"{self.source}/{self.target}: {reason} [query: {self.promql}]"


class _Refused(Exception):
    """A query's answer that is not one number within 0..1."""


class _Stopped(Exception):
    """No answer from Prometheus: the rest of the poll would fare no better."""


class PrometheusSource:
    """Polls one Prometheus (``url``, e.g. ``FUSIONPLANE_PROMETHEUS_URL``) for every target's GPU load.

    ``window`` is the PromQL duration the DCGM series are averaged over;
    ``ttl_seconds`` is every sample's TTL.
    """

    name = "prometheus"

    def __init__(self, url: str, *, window: str = DEFAULT_WINDOW, ttl_seconds: float = DEFAULT_TTL_SECONDS) -> None:
        if not url:
            raise ValueError("a Prometheus URL is required")
        if not _DURATION.fullmatch(window):
            raise ValueError(f"window must be a PromQL duration such as 2m, got {window!r}")
        if not ttl_seconds > 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds!r}")
        self.url = url.rstrip("/")
        self.window, self.ttl_seconds = window, float(ttl_seconds)
        # no retries: a retry would spend the poll's time budget behind the runner's back,
        # and the runner already backs off and polls again
        self._client = PrometheusConnect(url=self.url, retry=Retry(total=0, redirect=0, raise_on_status=False))

    def close(self) -> None:
        self._client.close()

    def queries(self, wanted: Wanted) -> tuple[list[SignalQuery], list[str]]:
        """What one poll asks for, in target-name order, and the targets whose settings are unusable."""
        plan: list[SignalQuery] = []
        problems: list[str] = []
        for name in sorted(wanted.targets):
            target = wanted.targets[name]
            try:
                selector = target_selector(target)
            except ValueError as exc:
                problems.append(f"{target.name}: {exc}")
                selector = None
            if target.gpu_utilization_query:
                plan.append(SignalQuery(GPU_UTILIZATION_SOURCE, target.name, target.gpu_utilization_query))
            elif selector is not None:
                plan.append(
                    SignalQuery(GPU_UTILIZATION_SOURCE, target.name, default_utilization_query(selector, self.window))
                )
            if selector is not None:
                plan.append(SignalQuery(GPU_MEMORY_SOURCE, target.name, default_memory_query(selector, self.window)))
        return plan, problems

    def poll(self, wanted: Wanted, *, timeout_s: float, clock: Callable[[], datetime]) -> PollResult:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        deadline = time.monotonic() + timeout_s
        # Prometheus stamps an instant query's value with the evaluation time, not the
        # scrape time, so its timestamp says nothing more than our clock does; and the
        # start of the poll is the earlier, more conservative of our own readings
        observed_at = clock()
        plan, problems = self.queries(wanted)
        samples: list[SignalSample] = []
        answered = False
        for index, query in enumerate(plan):
            remaining = deadline - time.monotonic()
            try:
                if remaining < _MIN_CALL_S:
                    raise _Stopped(f"poll timeout of {timeout_s:g} s reached")
                outcome = self._ask(query, remaining, observed_at)
            except _Stopped as exc:
                if not answered:
                    raise PrometheusUnavailable(f"Prometheus at {self.url}: {exc}") from exc
                # what was read before Prometheus went away is still true
                unread = ", ".join(f"{q.source}/{q.target}" for q in plan[index:])
                problems.append(f"stopped after {index} of {len(plan)} queries ({exc}); not read: {unread}")
                return PollResult(samples=samples, problems=problems)
            answered = True
            if isinstance(outcome, SignalSample):
                samples.append(outcome)
            else:
                problems.append(outcome)
        return PollResult(samples=samples, problems=problems)

    def _ask(self, query: SignalQuery, remaining_s: float, observed_at: datetime) -> SignalSample | str:
        """The query's sample, or the problem with its answer; :class:`_Stopped` when there was no answer."""
        try:
            result = self._query(query.promql, remaining_s)
        except PrometheusApiClientException as exc:
            if _status_of(exc) in _QUERY_ERRORS:
                return query.problem(f"refused by Prometheus: {_brief(exc)}")
            # anything else (not ready, overloaded, out of time, auth, wrong URL) fails every query alike
            raise _Stopped(_brief(exc)) from exc
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            # refused, timed out, or an answer that is not the query API's JSON envelope
            raise _Stopped(f"{type(exc).__name__}: {_brief(exc)}") from exc
        try:
            value = _fraction(_single_value(result))
        except _Refused as exc:
            return query.problem(str(exc))
        return SignalSample(
            source=query.source, key=query.target, value=value, observed_at=observed_at, ttl_seconds=self.ttl_seconds
        )

    def _query(self, promql: str, remaining_s: float) -> Any:
        # the server-side timeout makes Prometheus give up on an expensive query as we do;
        # the client one bounds each connect and each read (0.7.2 annotates it as int, requests takes float)
        return self._client.custom_query(
            promql, params={"timeout": f"{remaining_s:.3f}"}, timeout=cast(int, remaining_s)
        )


def _single_value(result: Any) -> float:
    """The one number of an instant query's result (a scalar, or a vector of one series)."""
    if not isinstance(result, list):
        raise _Refused(f"unexpected result {_short(repr(result))}")
    if not result:
        raise _Refused("no data (empty result)")
    if len(result) == 2 and _is_timestamp(result[0]) and isinstance(result[1], str):
        return _number(result[1])  # scalar (or string) result: [time, "value"]
    if not all(isinstance(item, dict) for item in result):
        raise _Refused(f"unexpected result {_short(repr(result))}")
    if any("values" in item for item in result):
        raise _Refused("a range vector; the query must give an instant vector or a scalar")
    if len(result) > 1:
        labels = "; ".join(_short(item.get("metric")) for item in result[:3])
        more = " ..." if len(result) > 3 else ""
        raise _Refused(
            f"{len(result)} series where one value was expected ({labels}{more}); aggregate them, e.g. avg(...)"
        )
    pair = result[0].get("value")
    if not (isinstance(pair, list) and len(pair) == 2):
        raise _Refused(f"unexpected result {_short(repr(result))}")
    return _number(pair[1])


def _is_timestamp(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(text: object) -> float:
    try:
        value = float(cast(str, text))
    except (TypeError, ValueError):
        raise _Refused(f"not a number: {_short(repr(text))}") from None
    if not math.isfinite(value):
        raise _Refused(f"value is {text} (no data behind it, or a division by zero)")
    return value


def _fraction(value: float) -> float:
    # a clamp could only ever report a load that was not measured: 85 clamped to 1 would be
    # "at peak" and send work to a paid cloud, so anything beyond rounding is refused
    if -FRACTION_TOLERANCE <= value <= 1 + FRACTION_TOLERANCE:
        return min(max(value, 0.0), 1.0)
    hint = "; it looks like a percentage (divide by 100)" if 1 < value <= 100 else ""
    raise _Refused(f"value {value:g} is outside 0..1{hint}")


def _status_of(exc: PrometheusApiClientException) -> int | None:
    match = _STATUS.match(str(exc))
    return int(match.group(1)) if match else None


def _brief(exc: BaseException) -> str:
    return _short(str(exc))


def _short(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _PROBLEM_TEXT else text[: _PROBLEM_TEXT - 3] + "..."
