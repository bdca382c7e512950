"""Policy files: the embedded default, the schema, and errors that name the JSON path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controlplane.domain import DataSensitivity, Priority
from controlplane.policy import PolicyError, parse_policy, policy_version
from controlplane.policy_sources import DEFAULT_POLICY_PATH, load_policy_file, loads_policy
from tests.conftest import REPO

SCHEMA = REPO / "policies" / "schema.json"


def _doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "targets": [
            {"name": "local", "provider": "local", "private": True, "settings": {"slots": 2}},
            {"name": "aws", "provider": "aws", "private": False, "instance_types": ["g4dn.xlarge"]},
        ],
        "rules": [{"name": "private", "match": {"data_sensitivity": "private"}, "targets": ["local"]}],
    }
    doc.update(overrides)
    return doc


def test_the_default_policy_loads() -> None:
    policy = load_policy_file(DEFAULT_POLICY_PATH)
    assert [t.name for t in policy.targets] == ["local"]
    assert policy.targets[0].provider == "local"
    assert policy.targets[0].private is True
    assert policy.targets[0].settings == {"slots": 2}
    assert [r.targets for r in policy.rules] == [("local",)]
    assert len(policy.version) == 64


def test_the_default_policy_validates_against_the_published_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(json.loads(DEFAULT_POLICY_PATH.read_text()))
    for example in sorted((REPO / "policies" / "examples").glob("*.json")):
        if example.name in ("snapshot.json", "task.json"):
            # a signals snapshot (docs/policies.md, "Signals snapshot JSON") and the README's task for `plan`
            continue
        jsonschema.Draft202012Validator(schema).validate(json.loads(example.read_text()))
        load_policy_file(example)  # and the loader agrees
    # and the schema refuses what the loader refuses
    bad = _doc()
    bad["targets"][1]["provider"] = "gcp"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(bad)


def test_match_fields_take_one_value_or_a_list() -> None:
    policy = parse_policy(_doc(rules=[{"match": {"priority": ["high", "urgent"], "tenant": "acme"}}]))
    rule = policy.rules[0]
    assert rule.name == "rules[0]"
    assert rule.match.priority == (Priority.HIGH, Priority.URGENT)
    assert rule.match.tenant == ("acme",)
    assert rule.match.data_sensitivity == ()
    assert parse_policy(_doc()).rules[0].match.data_sensitivity == (DataSensitivity.PRIVATE,)


def test_version_is_the_sha256_of_canonical_json_whatever_the_formatting(tmp_path: Path) -> None:
    doc = _doc()
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(doc, indent=4))
    b.write_text(json.dumps(dict(reversed(list(doc.items()))), separators=(",", ":")))
    assert load_policy_file(a).version == load_policy_file(b).version == policy_version(doc)
    changed = _doc()
    changed["targets"][0]["settings"]["slots"] = 3
    assert parse_policy(changed).version != policy_version(doc)


def _bad_target(field: str, value: Any) -> dict[str, Any]:
    doc = _doc()
    doc["targets"][1][field] = value
    return doc


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_bad_target("provider", "gcp"), "targets[1].provider: must be one of local, kubernetes, aws, azure"),
        (_bad_target("private", "yes"), "targets[1].private: must be true or false"),
        (_bad_target("name", "Bad Name"), "targets[1].name: must be a name"),
        (_bad_target("name", "local"), "targets[1].name: duplicate target name 'local'"),
        (_bad_target("regions", "us-east-1"), "targets[1].regions: must be an array of strings"),
        (_bad_target("instance_types", ["g4dn", 3]), "targets[1].instance_types[1]: must be a non-empty string"),
        (_bad_target("max_price_usd_h", -1), "targets[1].max_price_usd_h: must be a positive number"),
        (_bad_target("settings", []), "targets[1].settings: must be an object"),
        (_bad_target("colour", "red"), "targets[1].colour: unknown field"),
        ({"targets": [{"name": "x", "provider": "local"}]}, "targets[0].private: is required"),
        ({"rules": []}, "targets: is required"),
        ({"targets": []}, "targets: must name at least one target"),
        ({"targets": {}}, "targets: must be an array"),
        (_doc(rules={}), "rules: must be an array"),
        (_doc(rules=[{"targets": ["local", "gcp"]}]), "rules[0].targets[1]: unknown target 'gcp'"),
        (_doc(rules=[{"targets": ["local", "local"]}]), "rules[0].targets[1]: target 'local' is listed twice"),
        (_doc(rules=[{"exclude": ["nowhere"]}]), "rules[0].exclude[0]: unknown target"),
        (_doc(rules=[{"match": {"priority": "asap"}}]), "rules[0].match.priority: must be one of low, normal"),
        (_doc(rules=[{"match": {"kind": ["image", "gif"]}}]), "rules[0].match.kind[1]: must be one of image, video"),
        (_doc(rules=[{"match": {"tenant": []}}]), "rules[0].match.tenant: must not be empty"),
        (_doc(rules=[{"match": {"labels": {}}}]), "rules[0].match.labels: must be a non-empty object"),
        (_doc(rules=[{"match": {"colour": "red"}}]), "rules[0].match.colour: unknown field"),
        (_doc(rules=[{"name": "a"}, {"name": "a"}]), "rules[1].name: duplicate rule name 'a'"),
        (_doc(rules=["x"]), "rules[0]: must be an object, not string"),
        (_doc(task_rules=[]), "task_rules: the seed form stands alone"),
        (_doc(budget=5), "budget: unknown field"),
        ([], "must be an object, not array"),
    ],
)
def test_errors_name_the_json_path(document: Any, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(document)
    assert str(caught.value).startswith(message), str(caught.value)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(PolicyError, match=r"cannot read .*missing\.json"):
        load_policy_file(missing)
    broken = tmp_path / "broken.json"
    broken.write_text('{"targets": [')
    with pytest.raises(PolicyError, match=r"broken\.json is not valid JSON"):
        load_policy_file(broken)
    nan = tmp_path / "nan.json"
    nan.write_text('{"targets": [{"name": "a", "provider": "aws", "private": false, "max_price_usd_h": NaN}]}')
    with pytest.raises(PolicyError, match="NaN is not valid JSON"):
        load_policy_file(nan)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_bad_target("provider", "gcp")))
    with pytest.raises(PolicyError) as caught:
        load_policy_file(bad)
    assert caught.value.path == "targets[1].provider"


def test_oversized_documents_are_refused() -> None:
    with pytest.raises(PolicyError, match="larger than"):
        loads_policy(" " * (1 << 20 + 1))
