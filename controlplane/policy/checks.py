"""Semantic checks on a parsed policy: what ``parse_policy`` accepts but cannot work as written.

``parse_policy`` stops at the first structural error (a bad type, an unknown
target, a duplicate name). A document can pass it and still be wrong: a
rule that no task can ever reach, a rule whose actions leave no target, a
hedge wider than the targets a rule allows. :func:`check_policy` finds
those, each as a :class:`Finding` naming the JSON path of the offending
element, like :class:`~controlplane.policy.model.PolicyError` does.

Errors are reported only when they are certain from the document alone,
whatever the tasks and signals: the reasoning mirrors
:mod:`controlplane.policy.engine` (first match wins; a rule with ``when``
conditions may not fire, so only rules without conditions are trusted to
catch a task). Where certainty would need knowledge of the signals, the
check stays silent rather than guess.

How "rule B can never be reached" is decided: a rule's ``match`` is split
into cells, one per combination of the values its enum fields (priority,
data sensitivity, kind) and its tenant list allow; every other field is the
same in each cell. A cell is covered by an earlier rule without conditions
when that rule's match holds for every task in the cell, field by field.
A rule is unreachable when each of its cells is covered: whatever task it
would match, an earlier rule has matched it first. The same cells tell
which data sensitivities can still reach a rule, which is how a rule that
only ever gets private tasks is recognised.

Pure: no I/O, no clock; the same policy always gives the same findings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from controlplane.domain import DataSensitivity, Priority, SettingsCheck, Target, TaskKind, missing_launch_settings
from controlplane.policy.model import Actions, Match, Policy, PolicyError, Range, Rule
from controlplane.policy.parse import parse_policy
from controlplane.policy.seed import NO_SEED_CLOUDS, SEED_KEY, SEED_RULE_PREFIX, SeedClouds

__all__ = ["Finding", "Severity", "check_policy", "launch_problems", "require_launchable", "validate_document"]

Severity = Literal["error", "warning"]

#: the engine treats a label as "present, any value" only when this is its whole list
_ANY_VALUE = ("*",)
_T = TypeVar("_T")


@dataclass(frozen=True)
class Finding:
    """One problem in a policy document; ``path`` is the JSON path of the offending element."""

    path: str
    message: str
    severity: Severity

    def __str__(self) -> str:
        # the same shape as PolicyError, so the CLI prints both alike
        return f"{self.path}: {self.message}" if self.path else self.message


def validate_document(
    document: object, *, seed_clouds: SeedClouds = NO_SEED_CLOUDS, check_settings: SettingsCheck | None = None
) -> list[Finding]:
    """``parse_policy``, :func:`launch_problems`, then :func:`check_policy`: every finding for a document.

    A document that does not parse gives exactly one error finding (the
    parser stops at the first structural error); targets that cannot launch
    give one error each (every bad setting of every target, with
    ``check_settings``). The semantic checks need a policy that parses and
    can launch, so they run only then.
    """
    try:
        policy = parse_policy(document, seed_clouds=seed_clouds)
    except PolicyError as exc:
        return [Finding(exc.path, exc.message, "error")]
    problems = launch_problems(policy, check_settings=check_settings)
    if problems:
        return [Finding(p.path, p.message, "error") for p in problems]
    return check_policy(policy)


def require_launchable(policy: Policy, *, check_settings: SettingsCheck | None = None) -> None:
    """Refuse a policy with a cloud target that cannot launch: raises the first of :func:`launch_problems`.

    Called wherever a policy is about to be put in force (start-up, every
    Consul or file reload), so a policy that cannot launch is refused there,
    and the last good one stays, rather than failing every attempt at launch.
    """
    problems = launch_problems(policy, check_settings=check_settings)
    if problems:
        raise problems[0]


def launch_problems(policy: Policy, *, check_settings: SettingsCheck | None = None) -> list[PolicyError]:
    """Why targets of ``policy`` cannot launch, in document order, each at its JSON path.

    A cloud target without the settings its provider needs
    (:data:`~controlplane.domain.LAUNCH_REQUIREMENTS`) is refused at
    ``targets[i].settings``; with ``check_settings`` (the providers' settings
    models: ``providers.target_settings.check_target_settings``, passed in
    because this package may not import providers) every setting of the
    wrong form, and every unknown key, at ``targets[i].settings.KEY``. The
    seed form's built-in clouds are not refused: they are marked
    ``not_configured`` and left out of plans instead.
    """
    if policy.from_seed:
        return []
    problems: list[PolicyError] = []
    for index, target in enumerate(policy.targets):
        what = f"{target.provider} target {target.name!r}"
        missing = missing_launch_settings(target.provider, target.settings)
        if missing:
            problems.append(
                PolicyError(
                    f"targets[{index}].settings",
                    f"{what} cannot launch: needs {', '.join(missing)} (docs/providers.md)",
                )
            )
        if check_settings is not None:
            for path, message in check_settings(target.provider, target.settings):
                problems.append(PolicyError(f"targets[{index}].settings.{path}", f"{what}: {message}"))
    return problems


def check_policy(policy: Policy) -> list[Finding]:
    """The semantic problems of a parsed policy, errors and warnings, in document order."""
    return _Checker(policy).run()


# -- match coverage -----------------------------------------------------------------------------------

#: one cell of a match: a single priority, sensitivity and kind, and one listed tenant (None: any tenant)
_Cell = tuple[Priority, DataSensitivity, TaskKind, str | None]


def _cells(match: Match) -> list[_Cell]:
    # an empty field means "any value", so it splits into every member; tenants are open-ended,
    # so an empty tenant list stays one "any tenant" cell
    priorities = _unique(match.priority) or tuple(Priority)
    sensitivities = _unique(match.data_sensitivity) or tuple(DataSensitivity)
    kinds = _unique(match.kind) or tuple(TaskKind)
    tenants: tuple[str | None, ...] = _unique(match.tenant) or (None,)
    return [(p, d, k, t) for p in priorities for d in sensitivities for k in kinds for t in tenants]


def _unique(values: Iterable[_T]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(values))


def _covers_cell(outer: Match, cell: _Cell, inner: Match) -> bool:
    """Whether ``outer`` holds for every task in ``cell`` of ``inner`` (sufficient, never a guess)."""
    priority, sensitivity, kind, tenant = cell
    if outer.priority and priority not in outer.priority:
        return False
    if outer.data_sensitivity and sensitivity not in outer.data_sensitivity:
        return False
    if outer.kind and kind not in outer.kind:
        return False
    # a cell with any tenant is covered only by a rule that takes any tenant
    if outer.tenant and (tenant is None or tenant not in outer.tenant):
        return False
    return (
        _labels_cover(outer.labels, inner.labels)
        and _range_covers(outer.deadline_seconds, inner.deadline_seconds)
        and _range_covers(outer.input_bytes, inner.input_bytes)
    )


def _labels_cover(outer: Mapping[str, tuple[str, ...]], inner: Mapping[str, tuple[str, ...]]) -> bool:
    for label, accepted in outer.items():
        required = inner.get(label)
        if required is None:
            # inner takes tasks without this label; outer does not
            return False
        if accepted == _ANY_VALUE:
            continue  # inner requires the label, so it is present
        if required == _ANY_VALUE or not set(required) <= set(accepted):
            return False
    return True


def _unbounded(span: Range | None) -> bool:
    # Range.holds: an unbounded range holds for every value, an unknown one included
    return span is None or (span.min is None and span.max is None)


def _range_covers(outer: Range | None, inner: Range | None) -> bool:
    if outer is None or _unbounded(outer):
        return True
    # a bounded outer range excludes tasks without the value, which an unbounded inner admits
    if inner is None or _unbounded(inner):
        return False
    low_ok = outer.min is None or (inner.min is not None and inner.min >= outer.min)
    high_ok = outer.max is None or (inner.max is not None and inner.max <= outer.max)
    return low_ok and high_ok


# -- actions ------------------------------------------------------------------------------------------


def _ruled_out(policy: Policy, actions: Actions, *, skip: str = "") -> dict[str, str]:
    """Target name -> why the rule's actions rule it out, as engine._rule_exclusions decides.

    ``skip`` leaves one action out, to ask whether another action already rules a target out.
    """
    out: dict[str, str] = {}
    for target in policy.targets:
        why = _why_ruled_out(target, actions, skip=skip)
        if why is not None:
            out[target.name] = why
    return out


def _why_ruled_out(target: Target, actions: Actions, *, skip: str = "") -> str | None:
    name, cloud = target.name, target.market_provider is not None
    if skip != "targets" and actions.targets and name not in actions.targets:
        return "the rule's targets do not list it"
    if skip != "exclude" and name in actions.exclude:
        return "the rule excludes it"
    if skip != "require" and actions.require and name not in actions.require:
        return f"the rule requires {', '.join(actions.require)}"
    if actions.use_cloud is True and not cloud:
        return "use_cloud: true and it is not a cloud target"
    if actions.use_cloud is False and cloud:
        return "use_cloud: false and it is a cloud target"
    if actions.cloud_provider and cloud and target.market_provider != actions.cloud_provider:
        return f"cloud_provider: {actions.cloud_provider} and it is on {target.market_provider}"
    return None


def _allowed(policy: Policy, actions: Actions) -> list[Target]:
    """The targets a rule leaves in the running, in its order (before capacity and prices)."""
    order = actions.targets or tuple(t.name for t in policy.targets)
    by_name = {t.name: t for t in policy.targets}
    return [by_name[n] for n in order if n in by_name and _why_ruled_out(by_name[n], actions) is None]


def _ceiling(target: Target, actions: Actions) -> float | None:
    prices = [p for p in (target.max_price_usd_h, actions.max_price_usd_h) if p is not None]
    return min(prices) if prices else None


def _names(targets: Iterable[Target]) -> str:
    return ", ".join(t.name for t in targets)


def _rules_phrase(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


# -- the checker --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reach:
    """Which of a rule's cells no earlier rule without conditions takes."""

    #: cell -> index of the first earlier unconditional rule covering it, or None
    cover: dict[_Cell, int | None]
    #: an earlier unconditional rule that covers every cell on its own, if any
    single: int | None

    @property
    def open_cells(self) -> list[_Cell]:
        return [cell for cell, by in self.cover.items() if by is None]

    @property
    def unreachable(self) -> bool:
        return not self.open_cells

    @property
    def shadowing(self) -> list[int]:
        return sorted({by for by in self.cover.values() if by is not None})


class _Checker:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.findings: list[Finding] = []

    # paths: a seed-form document has task_rules[i] where the parsed policy has rules[i]
    def rule_path(self, index: int, sub: str = "") -> str:
        if self.policy.from_seed:
            if self.policy.rules[index].name.startswith(SEED_RULE_PREFIX):
                return SEED_KEY  # one of the seed's own routes after the entries
            # the seed entry's fields do not map one to one onto the rule's; name the entry
            return f"{SEED_KEY}[{index}]"
        return f"rules[{index}]{sub}"

    def target_path(self, index: int) -> str:
        return SEED_KEY if self.policy.from_seed else f"targets[{index}]"

    def rule_ref(self, index: int) -> str:
        return f'"{self.policy.rules[index].name}" ({self.rule_path(index)})'

    def add(self, path: str, message: str, severity: Severity) -> None:
        self.findings.append(Finding(path, message, severity))

    def reach(self, index: int, match: Match) -> _Reach:
        """Coverage of ``match`` (rule ``index``, or the default rule at len(rules)) by earlier rules."""
        earlier = [(i, r.match) for i, r in enumerate(self.policy.rules[:index]) if r.when.empty]
        cells = _cells(match)
        single = next((i for i, m in earlier if all(_covers_cell(m, c, match) for c in cells)), None)
        cover = {c: next((i for i, m in earlier if _covers_cell(m, c, match)), None) for c in cells}
        return _Reach(cover=cover, single=single)

    def run(self) -> list[Finding]:
        policy = self.policy
        live: list[tuple[Rule, bool]] = []  # rules that can be chosen, with "gets only private tasks"
        for index, rule in enumerate(policy.rules):
            if policy.from_seed and rule.name.startswith(SEED_RULE_PREFIX):
                # the seed's own routes after the entries: nothing for the operator to fix (entries may
                # shadow them on purpose), but those a task can reach still offer their targets
                if not self.reach(index, rule.match).unreachable:
                    live.append((rule, False))
                continue
            reach = self.reach(index, rule.match)
            dead = self.check_reachable(index, reach)
            dead = self.check_conditions(index, rule) or dead
            # an unreachable rule is judged on its own match: what it would get if it were moved up
            open_cells = reach.open_cells or list(reach.cover)
            private_only = all(cell[1] is DataSensitivity.PRIVATE for cell in open_cells)
            # "may get private tasks" is a warning about tasks that arrive; an unreachable rule gets none
            may_private = not reach.unreachable and any(cell[1] is DataSensitivity.PRIVATE for cell in open_cells)
            self.check_actions(index, rule, private_only=private_only, may_private=may_private, reach=reach)
            self.check_match_entries(index, rule.match)
            if not dead:
                live.append((rule, private_only))
        self.check_targets_used(live)
        self.check_not_configured()
        self.check_private_pools()
        return self.findings

    def check_private_pools(self) -> None:
        """A cluster on a cloud node pool marked private: the operator's call, but private data leaves the site."""
        for index, target in enumerate(self.policy.targets):
            if target.cloud is not None and target.private:
                message = (
                    f"runs on {target.cloud.provider} {target.cloud.capacity_type} nodes in {target.cloud.region} "
                    "and is marked private, so private tasks may go there: mark it private only if that cluster "
                    "and its bucket are inside your data boundary"
                )
                self.add(f"{self.target_path(index)}.private", message, "warning")

    def check_not_configured(self) -> None:
        """A seed form's built-in cloud with no launch settings: valid, but it takes no task."""
        for target in self.policy.targets:
            if target.not_configured is not None:
                message = f"{target.not_configured}; tasks that would go there run on local"
                self.add(SEED_KEY, message, "warning")

    def check_reachable(self, index: int, reach: _Reach) -> bool:
        if not reach.unreachable:
            return False
        if reach.single is not None:
            message = (
                f"unreachable: rule {self.rule_ref(reach.single)} matches every task this rule matches "
                "and has no conditions"
            )
        else:
            names = _rules_phrase([self.rule_ref(i) for i in reach.shadowing])
            message = f"unreachable: rules {names} together match every task this rule matches and have no conditions"
        self.add(self.rule_path(index), message, "error")
        return True

    def check_conditions(self, index: int, rule: Rule) -> bool:
        """Conditions that can never hold whatever the signals say (the engine's own reading of them)."""
        dead = False
        when, actions = rule.when, rule.actions
        if when.spot_price_under_budget:
            # engine._any_price_within_budget: the rule's listed targets (or all), clouds with a max price
            names = actions.targets or tuple(t.name for t in self.policy.targets)
            clouds = [
                t for t in (self.policy.target(n) for n in names) if t is not None and t.market_provider is not None
            ]
            if not clouds:
                why = "the rule names no cloud target"
            elif all(_ceiling(t, actions) is None for t in clouds):
                why = f"no max price for {_names(clouds)} (set max_price_usd_h on the target or the rule)"
            else:
                why = ""
            if why:
                path = self.rule_path(index, ".when.spot_price_under_budget")
                self.add(path, f"can never hold: {why}, so the rule never applies", "error")
                dead = True
        if when.budget_left_today_usd_above is not None and self.policy.thresholds.daily_budget_usd is None:
            path = self.rule_path(index, ".when.budget_left_today_usd_above")
            self.add(path, "can never hold: thresholds.daily_budget_usd is not set, so the rule never applies", "error")
            dead = True
        return dead

    def check_actions(self, index: int, rule: Rule, *, private_only: bool, may_private: bool, reach: _Reach) -> None:
        policy, actions = self.policy, rule.actions
        allowed = _allowed(policy, actions)
        if not allowed:
            considered = [policy.target(n) for n in actions.targets] if actions.targets else list(policy.targets)
            why = "; ".join(f"{t.name}: {_why_ruled_out(t, actions)}" for t in considered if t is not None)
            self.add(
                self.rule_path(index),
                f"its actions leave no target ({why}), so the tasks it gets are never placed",
                "error",
            )
            return
        private_allowed = [t for t in allowed if t.private]
        base = "every target it allows is non-private, so private tasks it matches can never be placed"
        if not private_allowed and private_only:
            # every task that can reach this rule is private: nothing it allows may hold them
            only_by_order = not (
                rule.match.data_sensitivity and set(rule.match.data_sensitivity) == {DataSensitivity.PRIVATE}
            )
            detail = (
                " (earlier rules with no conditions take every non-private task it matches)"
                if only_by_order and not reach.unreachable
                else ""
            )
            self.add(self.rule_path(index), base + detail, "error")
        elif not private_allowed and may_private:
            self.add(
                self.rule_path(index),
                f"{base}; match data_sensitivity, or put a rule for private data before it",
                "warning",
            )
        usable = private_allowed if private_only else allowed
        if usable and actions.hedge > len(usable):
            self.add(
                self.rule_path(index, ".hedge"),
                f"hedge {actions.hedge} but the rule allows only {len(usable)} target(s) for the tasks it gets "
                f"({_names(usable)})",
                "warning",
            )
        self.check_target_entries(index, rule, private_only=private_only and bool(private_allowed))

    def check_target_entries(self, index: int, rule: Rule, *, private_only: bool) -> None:
        """Listed, excluded and required targets that cannot do what the rule seems to say."""
        policy, actions = self.policy, rule.actions
        for j, name in enumerate(actions.targets):
            target = policy.target(name)
            if target is None:
                continue
            why = _why_ruled_out(target, actions)
            if why is not None:
                path = self.rule_path(index, f".targets[{j}]")
                self.add(path, f'"{name}" is listed but {why}, so it is never a candidate', "warning")
            elif private_only and not target.private:
                path = self.rule_path(index, f".targets[{j}]")
                message = (
                    f'"{name}" is not private and every task this rule gets is private, so it is never a candidate'
                )
                self.add(path, message, "warning")
        for j, name in enumerate(actions.exclude):
            target = policy.target(name)
            why = None if target is None else _why_ruled_out(target, actions, skip="exclude")
            if why is not None:
                path = self.rule_path(index, f".exclude[{j}]")
                self.add(path, f'"{name}" is already ruled out ({why}); excluding it changes nothing', "warning")
        for j, name in enumerate(actions.require):
            target = policy.target(name)
            why = None if target is None else _why_ruled_out(target, actions)
            if why is not None:
                path = self.rule_path(index, f".require[{j}]")
                self.add(path, f'"{name}" is required but {why}, so it is never a candidate', "warning")

    def check_match_entries(self, index: int, match: Match) -> None:
        """Duplicates parse_policy accepts in match lists, and "*" inside a label list (taken literally)."""
        lists: list[tuple[str, Sequence[str]]] = [
            ("priority", match.priority),
            ("data_sensitivity", match.data_sensitivity),
            ("kind", match.kind),
            ("tenant", match.tenant),
        ]
        lists += [(f"labels.{label}", values) for label, values in match.labels.items()]
        for field_path, values in lists:
            seen: set[str] = set()
            for j, value in enumerate(values):
                path = self.rule_path(index, f".match.{field_path}[{j}]")
                if value in seen:
                    self.add(path, f'"{value}" is listed twice', "warning")
                seen.add(value)
                if field_path.startswith("labels.") and value == "*" and tuple(values) != _ANY_VALUE:
                    message = 'in a list, "*" is the literal value "*"; "any value" is "*" on its own'
                    self.add(path, message, "warning")

    def check_targets_used(self, live: list[tuple[Rule, bool]]) -> None:
        """Targets that no rule which can be chosen (the default rule included) ever offers."""
        policy = self.policy
        default = self.reach(len(policy.rules), Match())
        offered: set[str] = set()
        for rule, private_only in live:
            offered.update(t.name for t in _allowed(policy, rule.actions) if t.private or not private_only)
        default_private_only = all(cell[1] is DataSensitivity.PRIVATE for cell in default.open_cells)
        if not default.unreachable:
            offered.update(t.name for t in policy.targets if t.private or not default_private_only)
        if default.unreachable:
            shadowing = default.shadowing
            names = _rules_phrase([self.rule_ref(i) for i in shadowing])
            verb = "matches" if len(shadowing) == 1 else "match"
            noun = "rule" if len(shadowing) == 1 else "rules"
            default_why = f"the default rule never applies ({noun} {names} {verb} every task first)"
        else:
            default_why = "the default rule only gets private tasks"
        for k, target in enumerate(policy.targets):
            if target.name in offered:
                continue
            what = f'the seed\'s built-in target "{target.name}"' if policy.from_seed else f'"{target.name}"'
            message = f"never used: no rule that can be chosen makes {what} a candidate, and {default_why}"
            self.add(self.target_path(k), message, "warning")
