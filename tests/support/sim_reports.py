"""Simulator report documents for the HTML report's tests: made from a seed, shaped like the simulator's."""

from __future__ import annotations

import math
import random
from typing import Any

DAY_S = 86_400
TARGETS = ("onprem", "aws-spot", "azure-spot")


def sample_series(rng: random.Random, points: int, targets: tuple[str, ...] = TARGETS) -> dict[str, Any]:
    step = DAY_S / max(points - 1, 1)
    t_s = [round(i * step, 3) for i in range(points)]
    # a launch-day curve: quiet night, a surge in the afternoon, noise on top
    load = [max(0.0, math.sin(math.pi * t / DAY_S) ** 4 * 400 + rng.gauss(0, 4)) for t in t_s]
    misses, total = [], 0
    for value in load:
        total += int(value > 350) * rng.randint(0, 3)
        misses.append(total)
    return {
        "t_s": t_s,
        "queue_depth": [round(v) for v in load],
        "gpus_in_use": {
            target: [min(16 * (k + 1), round(v / (20 + 10 * k))) for v in load] for k, target in enumerate(targets)
        },
        "spend_usd_per_h": [round(v * 0.08, 2) for v in load],
        "sla_misses": misses,
    }


def sample_summary(rng: random.Random) -> dict[str, Any]:
    completed = rng.randint(490_000, 500_000)
    usd = round(rng.uniform(900, 2500), 2)
    return {
        "completed": completed,
        "failed": 500_000 - completed,
        "lost": 0,
        "usd_total": usd,
        "usd_per_completed": usd / completed,
        "sla": {p: round(rng.uniform(0.9, 1.0), 4) for p in ("urgent", "high", "normal", "low")},
        "queue_wait_s": {"p50": round(rng.uniform(0.5, 5), 2), "p95": rng.uniform(10, 60), "p99": rng.uniform(60, 900)},
        "completion_s": {"p50": rng.uniform(30, 60), "p95": rng.uniform(200, 400), "p99": rng.uniform(600, 9000)},
        "preemptions": rng.randint(0, 300),
        "failovers": rng.randint(0, 300),
        "gpu_hours_lost": round(rng.uniform(0, 10), 2),
        "private_off_private": 0,
        "spend_by_target": {t: round(usd * share, 2) for t, share in zip(TARGETS, (0.0, 0.8, 0.2), strict=True)},
    }


def sample_report(runs: int = 3, points: int = 289, seed: int = 7) -> dict[str, Any]:
    """``runs`` policy and baseline runs (alternating) with ``points`` samples each, then an offline bound."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(runs):
        kind = "policy" if i % 2 == 0 else "baseline"
        name = f"policy:variant-{i}" if kind == "policy" else f"baseline:strategy-{i}"
        out.append({"name": name, "kind": kind, "summary": sample_summary(rng), "series": sample_series(rng, points)})
    bound: dict[str, Any] = {
        "usd_total": 700.0,
        "usd_per_completed": 0.0014,
        "completed": 500_000,
        "failed": None,
        "sla": {},
    }
    out.append({"name": "bound:offline", "kind": "bound", "summary": bound, "series": None})
    return {
        "scenario": {
            "name": "launch-day",
            "seed": seed,
            "start": "2023-02-15T00:00:00Z",
            "duration_s": DAY_S,
            "tasks": 500_000,
            "description": "A product launch: ten times the usual load from noon, spot capacity tight.",
        },
        "runs": out,
    }
