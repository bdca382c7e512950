from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from controlplane.api.auth import TokenError, TokenRegistry, create_token, hash_token


def test_a_created_token_authenticates_and_only_its_hash_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "var" / "tokens.json"
    token = create_token(path, tenant="acme", role="submitter", name="ci")
    assert token.startswith("fp_")
    assert len(token) >= 40
    text = path.read_text(encoding="utf-8")
    assert token not in text
    assert hash_token(token) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    principal = TokenRegistry.load(path).authenticate(token)
    assert principal is not None
    assert (principal.tenant, principal.role, principal.name) == ("acme", "submitter", "ci")
    assert not principal.sees_all_tenants


def test_tokens_accumulate_and_each_maps_to_its_own_role(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    first = create_token(path, tenant="acme", role="submitter")
    second = create_token(path, tenant="ops", role="operator")
    registry = TokenRegistry.load(path)
    assert len(registry) == 2
    assert registry.authenticate(first).role == "submitter"  # type: ignore[union-attr]
    operator = registry.authenticate(second)
    assert operator is not None
    assert operator.sees_all_tenants


@pytest.mark.parametrize("token", ["", "fp_wrong", "Bearer x", "fp_" + "a" * 43])
def test_unknown_tokens_do_not_authenticate(tmp_path: Path, token: str) -> None:
    path = tmp_path / "tokens.json"
    create_token(path, tenant="acme", role="admin")
    assert TokenRegistry.load(path).authenticate(token) is None


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ("not json", "tokens_file"),
        ('{"nope": []}', "tokens_file"),
        ('{"tokens": ["x"]}', "tokens[0]"),
        ('{"tokens": [{"tenant": "a", "role": "root", "sha256": "ab"}]}', "tokens[0].role"),
        ('{"tokens": [{"tenant": "a", "role": "admin"}]}', "tokens[0].sha256"),
        ('{"tokens": [{"tenant": "A", "role": "admin", "sha256": "' + "ab" * 32 + '"}]}', "tokens[0].tenant"),
        ('{"tokens": [{"tenant": "a", "role": "admin", "sha256": "ab"}]}', "tokens[0].sha256"),
    ],
)
def test_a_bad_tokens_file_names_the_field(tmp_path: Path, document: str, field: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(document, encoding="utf-8")
    with pytest.raises(TokenError) as info:
        TokenRegistry.load(path)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("tenant", "role", "field"),
    [
        ("acme", "root", "role"),
        ("a b", "admin", "tenant"),
        ("", "admin", "tenant"),
        ("x" * 64, "admin", "tenant"),
        ("Acme", "admin", "tenant"),
        ("..", "admin", "tenant"),
        ("a/b", "admin", "tenant"),
        ("a.b", "admin", "tenant"),
        ("a_b", "admin", "tenant"),
    ],
)
def test_bad_token_requests_write_nothing(tmp_path: Path, tenant: str, role: str, field: str) -> None:
    path = tmp_path / "tokens.json"
    with pytest.raises(TokenError) as info:
        create_token(path, tenant=tenant, role=role)
    assert info.value.field == field
    assert not path.exists()


def test_a_missing_tokens_file_is_an_empty_registry(tmp_path: Path) -> None:
    assert len(TokenRegistry.load(tmp_path / "absent.json")) == 0
    assert json.loads(json.dumps({"ok": True}))  # the module works without a file
