"""Where simulated instances come from: the private cluster's GPUs and each cloud region's spot market.

A spot market holds one availability trace per zone (``simulator.traces``):
at each moment a zone can hold ``trace value x instances_per_unit``
instances; a launch takes the first zone (in the scenario's order) with room,
and when a zone's value drops below what runs there, the newest instances
there are preempted. In ``on_demand`` mode the same market has no limit and
never preempts (on-demand capacity is modelled as always there); a target whose
``market`` is ``on-demand`` buys that way in either mode. On-demand instances
are kept apart from the zone's spot ones (``Zone.on_demand``): they neither
use the trace's room nor get reclaimed when it shrinks.

Prices: a spot instance pays the price history's step function for its zone
(else its region), else the scenario's catalog price; an on-demand one the
scenario's on-demand price. Billing is per second from the launch request to
the end (EC2 and Azure bill per second once running; counting the boot too
makes every figure a little pessimistic, the same for every policy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from simulator.scenario import CloudMarket, World

__all__ = ["Market", "MarketMode", "PriceBook", "PriceHistory", "TraceLike", "Zone"]

MarketMode = Literal["spot", "on_demand"]


class TraceLike(Protocol):
    """What the world reads of an availability trace (``simulator.traces.SpotTrace``)."""

    def available_at(self, offset_s: float) -> int: ...

    def next_change_after(self, offset_s: float) -> float | None: ...


class PriceHistory(Protocol):
    """What the world reads of a price history (``simulator.prices.PriceSeries``)."""

    def price_at(self, provider: str, region: str, instance_type: str, when: datetime) -> float | None: ...

    def next_change_after(self, provider: str, region: str, instance_type: str, when: datetime) -> datetime | None: ...


@dataclass(kw_only=True)
class Zone:
    name: str
    trace: TraceLike
    per_unit: int
    #: seconds into the trace at the simulation's start
    trace_offset_s: float
    #: spot attempt ids running (or booting) here, oldest first
    used: list[str] = field(default_factory=list)
    #: on-demand attempt ids here: outside the trace's room, never reclaimed
    on_demand: list[str] = field(default_factory=list)

    def available(self, now_s: float) -> int:
        return self.trace.available_at(self.trace_offset_s + now_s) * self.per_unit

    def next_change_s(self, now_s: float) -> float | None:
        at = self.trace.next_change_after(self.trace_offset_s + now_s)
        return None if at is None else at - self.trace_offset_s


@dataclass(kw_only=True)
class Market:
    provider: str
    region: str
    zones: list[Zone]
    speed: dict[str, float]
    latency: tuple[float, float]

    def pick_zone(self, now_s: float, mode: MarketMode, allowed: tuple[str, ...]) -> Zone | None:
        """The first zone (of ``allowed``, when the target names zones) with room for one more instance."""
        for zone in self.zones:
            if allowed and zone.name not in allowed:
                continue
            if mode == "on_demand" or len(zone.used) < zone.available(now_s):
                return zone
        return None

    def free(self, now_s: float, mode: MarketMode) -> int | None:
        if mode == "on_demand":
            return None
        return sum(max(zone.available(now_s) - len(zone.used), 0) for zone in self.zones)


class PriceBook:
    """What an instance costs per hour, and what a stretch of it costs, in the world's market mode."""

    def __init__(
        self, world: World, history: PriceHistory | None, *, mode: MarketMode, at: Callable[[float], datetime]
    ) -> None:
        self.world, self.history, self.mode, self.at = world, history, mode, at
        #: each market's zones, sorted: a region without its own price row reads the cheapest of them
        self._zones: dict[tuple[str, str], tuple[str, ...]] = {
            (cloud.provider, cloud.region): tuple(sorted(cloud.zones)) for cloud in world.clouds
        }

    def hourly(
        self,
        provider: str,
        region: str,
        zone: str | None,
        instance_type: str,
        now_s: float,
        market: MarketMode | None = None,
    ) -> float | None:
        """The price per hour of one instance bought on ``market`` (the world's mode when None)."""
        if (market or self.mode) == "on_demand":
            return _listed(self.world.on_demand, provider, instance_type)
        when = self.at(now_s)
        if self.history is not None:
            for place in self._places(provider, region, zone):
                price = self._price_at(provider, place, instance_type, when)
                if price is not None:
                    return price
        catalog = _listed(self.world.catalog_spot, provider, instance_type)
        if catalog is not None:
            return catalog
        # spot is never billed above on-demand (EC2 caps it there): the last resort, never "free"
        return _listed(self.world.on_demand, provider, instance_type)

    def cost(
        self,
        provider: str,
        region: str,
        zone: str | None,
        instance_type: str,
        t0: float,
        t1: float,
        market: MarketMode | None = None,
    ) -> float:
        """Dollars for one instance from ``t0`` to ``t1`` (simulated seconds), following the price's steps."""
        market = market or self.mode
        if market == "on_demand":
            return (_listed(self.world.on_demand, provider, instance_type) or 0.0) * max(t1 - t0, 0.0) / 3600.0
        total, t = 0.0, t0
        while t < t1:
            price = self.hourly(provider, region, zone, instance_type, t, market) or 0.0
            step_end = min(self._next_change(provider, region, zone, instance_type, t), t1)
            total += price * (step_end - t) / 3600.0
            t = step_end
        return total

    def _next_change(self, provider: str, region: str, zone: str | None, instance_type: str, t: float) -> float:
        if self.history is None:
            return float("inf")
        when = self.at(t)
        places = [place for group in self._places(provider, region, zone) for place in group]
        changes = [self.history.next_change_after(provider, place, instance_type, when) for place in places]
        upcoming = [(change - self.at(0.0)).total_seconds() for change in changes if change is not None]
        later = [offset for offset in upcoming if offset > t]
        return min(later) if later else float("inf")

    def _places(self, provider: str, region: str, zone: str | None) -> list[tuple[str, ...]]:
        """Where to look a price up, in order: the zone; the region's own row; else its zones' cheapest.

        The last is what the product's AWS price source publishes for a
        region (EC2 reports spot prices per zone): a history with zone rows
        only still gives the scheduler's price signal the prices billed.
        """
        places: list[tuple[str, ...]] = [(zone,)] if zone is not None else []
        places.append((region,))
        zones = self._zones.get((provider, region), ())
        if zone is None and zones:
            places.append(zones)
        return places

    def _price_at(self, provider: str, places: tuple[str, ...], instance_type: str, when: datetime) -> float | None:
        assert self.history is not None
        prices = [self.history.price_at(provider, place, instance_type, when) for place in places]
        known = [price for price in prices if price is not None]
        return min(known) if known else None


def _listed(table: Mapping[Any, Mapping[str, float]], provider: str, instance_type: str) -> float | None:
    return table.get(provider, {}).get(instance_type)


def market_of(cloud: CloudMarket, traces: dict[str, TraceLike]) -> Market:
    """A market for one scenario cloud entry, its zone traces already loaded (zone -> trace)."""
    zones = [
        Zone(
            name=name,
            trace=traces[name],
            per_unit=cloud.instances_per_unit,
            trace_offset_s=cloud.trace_offset_hours * 3600.0,
        )
        for name in cloud.zones
    ]
    return Market(
        provider=cloud.provider,
        region=cloud.region,
        zones=zones,
        speed=dict(cloud.speed),
        latency=(cloud.launch_latency.min_s, cloud.launch_latency.max_s),
    )
