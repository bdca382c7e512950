"""Expected dollars per completed task: what a candidate costs once its risk of not finishing is counted.

A rule with ``rank: "expected_cost"`` orders its candidates by this, not by
the hourly price (docs/policies.md, "Spot risk"). For one try of a task on
an offer, with ``L`` its launch overhead plus its work (``estimates``):

- a spot offer finishes the try with chance ``survive = exp(-hazard x L)``,
  its preemption hazard per hour learned from the offer's history
  (``spot_history/<offer>/preemptions`` over ``run_hours``) with the
  policy's ``spot_risk`` priors added as pseudo-observations; a try that
  does not finish is paid and done again, so the expected dollars are
  ``price x L / survive`` (the geometric number of tries, each charged in
  full: an upper bound, the same for every offer);
- its launch is refused with the learned refusal rate (``refusals`` over
  ``launches``, priors added): that costs no dollars but time, so it only
  lowers the chance shown and breaks ties;
- an on-demand offer survives for certain: ``price x L``;
- a private target is free at the margin: 0.

Pure: the history arrives in the snapshot, as every other signal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from controlplane.domain.reliability import SPOT_HISTORY_SOURCE, spot_history_key
from controlplane.policy.model import SpotRisk
from controlplane.policy.reading import SignalReader

__all__ = ["CERTAIN", "Risk", "expected_usd", "offer_risk"]


@dataclass(frozen=True, slots=True)
class Risk:
    """One spot offer's learned risk for a try of a given length."""

    #: chance a launch gets capacity
    launch_chance: float
    #: chance a try that got capacity runs to the end
    survive: float
    #: launches recorded in the history window (0: priors only, the cold start)
    samples: int

    @property
    def chance(self) -> float:
        """The chance one try runs the task to the end: it gets capacity and keeps it."""
        return self.launch_chance * self.survive


#: an offer with no risk at all: on-demand capacity that is there, private GPUs
CERTAIN = Risk(launch_chance=1.0, survive=1.0, samples=0)


def offer_risk(
    signals: SignalReader,
    priors: SpotRisk,
    provider: str,
    region: str | None,
    instance_type: str | None,
    length_s: float,
) -> Risk:
    """The offer's risk for a try of ``length_s`` seconds: its history (fresh samples only) plus the priors."""

    def seen(field: str) -> float:
        value = signals.history(f"{SPOT_HISTORY_SOURCE}/{spot_history_key(provider, region, instance_type, field)}")
        return value if value is not None and value > 0 else 0.0

    launches, refusals = seen("launches"), seen("refusals")
    preemptions, run_hours = seen("preemptions"), seen("run_hours")
    refusal = (refusals + priors.prior_refusal_rate * priors.prior_launches) / (launches + priors.prior_launches)
    prior_preemptions = priors.prior_hours / priors.prior_hours_between_preemptions
    hazard_per_h = (preemptions + prior_preemptions) / (run_hours + priors.prior_hours)
    survive = math.exp(-hazard_per_h * length_s / 3600.0)
    return Risk(launch_chance=max(1.0 - min(refusal, 1.0), 0.0), survive=survive, samples=int(launches))


def expected_usd(price_usd_h: float | None, length_s: float, risk: Risk) -> float | None:
    """Expected dollars until the task is done on this offer; None when its price is unknown."""
    if price_usd_h is None:
        return None
    # survive > 0 always (exp of a finite number), but tiny: a capped figure still ranks last
    return price_usd_h * length_s / 3600.0 / max(risk.survive, 1e-9)
