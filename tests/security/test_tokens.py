"""API tokens under attack: revoked, for a removed tenant, tampered, ambiguous, path-ish, over-reaching.

Against real servers on loopback: ``fusionctl serve`` in its own process for
what only the real wiring shows (revocation without restart, the dev token
never printed, /readyz detail), uvicorn with the registry wired as serve
wires it for the rest.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from prometheus_client.parser import text_string_to_metric_families

from controlplane.api.auth import TokenRegistry, create_token, hash_token
from controlplane.cli.main import cli
from controlplane.metrics import Metrics
from controlplane.store import Store, make_engine, upgrade
from tests.support.api_fixtures import METRICS, OPERATOR, ApiServer
from tests.support.serve_process import served

pytestmark = pytest.mark.timeout(120)

#: a change to the tokens file is seen within the 1 s check interval; the rest is slack for a loaded machine
TAKES_EFFECT_WITHIN_S = 2.5


def fusionctl(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def until(condition: Callable[[], bool], *, within_s: float) -> float:
    """Seconds until ``condition()`` held; fails the test when it did not within ``within_s``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within_s, f"not within {within_s} s"
        time.sleep(0.05)
    return time.monotonic() - started


def tokens_cli(tokens_file: Path, *args: str) -> Result:
    return fusionctl("tokens", *args, "--tokens-file", str(tokens_file))


# --------------------------------------------------------------------------- the real fusionctl serve


@pytest.mark.slow
def test_revocation_and_new_tokens_take_effect_in_the_running_server_without_restart(tmp_path: Path) -> None:
    with served(tmp_path) as plane:
        created = tokens_cli(plane.tokens_file, "create", "--tenant", "acme", "--role", "submitter", "--name", "ci")
        assert created.exit_code == 0, created.output
        token = created.stdout.strip()
        # created after start: works without a restart
        until(lambda: plane.get("/v1/tasks", token).status_code == 200, within_s=TAKES_EFFECT_WITHIN_S)

        revoked = tokens_cli(plane.tokens_file, "revoke", "ci")
        assert revoked.exit_code == 0, revoked.output
        took = until(lambda: plane.get("/v1/tasks", token).status_code == 401, within_s=TAKES_EFFECT_WITHIN_S)
        assert took < TAKES_EFFECT_WITHIN_S
        body = plane.get("/v1/tasks", token).json()
        assert body["error"]["field"] == "authorization"
        assert plane.process.poll() is None  # the same process all along


@pytest.mark.slow
def test_the_dev_token_is_never_printed_and_its_file_is_0600_from_the_start(tmp_path: Path) -> None:
    for _start in range(2):  # minted on the first start, found on the second: printed on neither
        with served(tmp_path) as plane:
            dev_token = (plane.var_dir / "dev-token").read_text(encoding="utf-8").strip()
            assert plane.get("/v1/tasks", dev_token).status_code == 200  # the file holds a working token
            assert plane.get("/metrics", dev_token).status_code == 200
    dev_file = tmp_path / "var" / "dev-token"
    assert stat.S_IMODE(dev_file.stat().st_mode) == 0o600
    output = plane.output()
    assert dev_token.startswith("fp_")
    assert dev_token not in output
    assert dev_token[3:20] not in output  # not even part of it
    assert str(Path("var") / "dev-token") in output  # the log says where it is
    assert "FUSIONPLANE_TOKEN=$(cat var/dev-token)" in output  # README's instructions, as printed


@pytest.mark.slow
def test_readyz_and_metrics_in_the_real_server(tmp_path: Path) -> None:
    with served(tmp_path) as plane:
        scrape = create_token(plane.tokens_file, tenant="ops", role="metrics", name="prometheus")
        submitter = create_token(plane.tokens_file, tenant="acme", role="submitter", name="acme")
        until(lambda: plane.get("/metrics", scrape).status_code == 200, within_s=TAKES_EFFECT_WITHIN_S)

        anonymous = plane.get("/readyz")
        assert anonymous.status_code == 200
        assert anonymous.json() == {"status": "ready"}  # no replica, lease or policy path
        assert plane.get("/readyz", submitter).json() == {"status": "ready"}
        detail = plane.get("/readyz", scrape).json()
        assert detail["status"] == "ready"
        assert {"policy", "scheduler"} <= set(detail)
        assert detail["scheduler"]["replica"]
        assert plane.get("/readyz", "fp_not-a-token").status_code == 401

        assert plane.get("/metrics").status_code == 401
        assert plane.get("/metrics", submitter).status_code == 403
        assert "fusionplane_tokens_loaded" in plane.get("/metrics", scrape).text
        assert plane.get("/healthz").json() == {"status": "ok"}  # open, as before


# --------------------------------------------------------------------------- uvicorn, registry wired like serve


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = make_engine(f"sqlite:///{tmp_path / 'plane.db'}")
    upgrade(engine=engine)
    yield Store(engine)
    engine.dispose()


def file_backed(store: Store, tmp_path: Path, tokens_file: Path) -> tuple[ApiServer, Metrics]:
    metrics = Metrics.create()
    registry = TokenRegistry.load(tokens_file, metrics=metrics)
    return ApiServer.start(store, tmp_path, tokens=registry, metrics=metrics), metrics


def test_a_token_of_a_removed_tenant_is_refused_on_its_own_tasks(store: Store, tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    globex = create_token(tokens_file, tenant="globex", role="submitter", name="globex-ci")
    globex_too = create_token(tokens_file, tenant="globex", role="submitter", name="globex-nightly")
    acme = create_token(tokens_file, tenant="acme", role="submitter", name="acme-ci")
    api, _metrics = file_backed(store, tmp_path, tokens_file)
    with api:
        task = api.client(globex).post("/v1/tasks", json=api.body(tenant="globex"))
        assert task.status_code == 202
        task_id = task.json()["id"]
        for name in ("globex-ci", "globex-nightly"):  # the tenant is gone: every token of it revoked
            assert tokens_cli(tokens_file, "revoke", name).exit_code == 0
        for token in (globex, globex_too):
            until(lambda t=token: api.client(t).get("/v1/tasks").status_code == 401, within_s=TAKES_EFFECT_WITHIN_S)
            assert api.client(token).get(f"/v1/tasks/{task_id}").status_code == 401
            assert api.client(token).post(f"/v1/tasks/{task_id}/cancel").status_code == 401
            assert api.client(token).put("/v1/uploads/face.png", content=b"x").status_code == 401
        assert api.client(acme).get("/v1/tasks").status_code == 200  # the other tenant is untouched


@pytest.mark.parametrize(
    "tampered",
    [
        "{not json",
        json.dumps({"tokens": "all of them"}),
        # an entry slipped in with a tenant that is a path: the whole file is refused, not that entry alone
        json.dumps({"tokens": [{"name": "x", "tenant": "../acme", "role": "admin", "sha256": hash_token("fp_x")}]}),
        json.dumps({"tokens": [{"name": "x", "tenant": "ACME", "role": "submitter", "sha256": hash_token("fp_x")}]}),
        json.dumps({"tokens": [{"name": "x", "tenant": "acme", "role": "root", "sha256": hash_token("fp_x")}]}),
        json.dumps({"tokens": [{"name": "x", "tenant": "acme", "role": "admin", "sha256": "0" * 63}]}),
    ],
)
def test_a_tampered_tokens_file_keeps_the_last_good_set(store: Store, tmp_path: Path, tampered: str) -> None:
    tokens_file = tmp_path / "tokens.json"
    acme = create_token(tokens_file, tenant="acme", role="submitter", name="acme-ci")
    scrape = create_token(tokens_file, tenant="ops", role="metrics", name="prometheus")
    good = json.loads(tokens_file.read_text(encoding="utf-8"))["tokens"]
    api, metrics = file_backed(store, tmp_path, tokens_file)
    with api:
        if tampered.startswith('{"tokens": ['):  # the good entries plus the bad one
            bad = json.loads(tampered)["tokens"]
            tampered = json.dumps({"tokens": [*good, *bad]})
        staged = tmp_path / "tampered.json"
        staged.write_text(tampered, encoding="utf-8")
        os.replace(staged, tokens_file)  # whole: the server must not catch a half-written file (counted twice)

        def rejected() -> float | None:
            return metrics.registry.get_sample_value("fusionplane_tokens_reloads_total", {"outcome": "invalid"})

        until(
            lambda: api.client(acme).get("/v1/tasks").status_code == 200 and rejected() == 1,
            within_s=TAKES_EFFECT_WITHIN_S,
        )
        assert api.client("fp_x").get("/v1/tasks").status_code == 401  # the slipped-in entry grants nothing
        scraped = api.client(scrape).get("/metrics").text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(scraped)
            for s in family.samples
        }
        assert samples[("fusionplane_tokens_reloads_total", (("outcome", "invalid"),))] == 1.0
        assert samples[("fusionplane_tokens_loaded", ())] == 2.0


def test_a_tampered_file_is_refused_at_start_naming_the_entry(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    create_token(tokens_file, tenant="acme", role="submitter")
    document = json.loads(tokens_file.read_text(encoding="utf-8"))
    document["tokens"].append({"name": "x", "tenant": "acme/../globex", "role": "admin", "sha256": "ab" * 32})
    tokens_file.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(ValueError, match=r"tokens\[1\]\.tenant"):
        TokenRegistry.load(tokens_file)
    # the operator can see and remove the bad entry with the CLI
    listed = tokens_cli(tokens_file, "list")
    assert "refused by the server: tenant" in listed.stdout
    assert tokens_cli(tokens_file, "revoke", "x").exit_code == 0
    assert len(TokenRegistry.load(tokens_file)) == 1


def test_an_ambiguous_or_unknown_revoke_changes_nothing(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    create_token(tokens_file, tenant="acme", role="submitter", name="ci")
    document = json.loads(tokens_file.read_text(encoding="utf-8"))
    # two entries with one name (written by hand: tokens create refuses a duplicate name)
    document["tokens"].append({**document["tokens"][0], "sha256": hash_token("fp_other")})
    tokens_file.write_text(json.dumps(document), encoding="utf-8")
    before = tokens_file.read_bytes()
    ids = [hash_token("fp_other")[:8], document["tokens"][0]["sha256"][:8]]

    ambiguous = tokens_cli(tokens_file, "revoke", "ci")
    assert ambiguous.exit_code == 2
    assert "NAME_OR_ID" in ambiguous.stderr
    assert "matches 2 tokens" in ambiguous.stderr
    assert all(i in ambiguous.stderr for i in ids)
    for unknown in ("nobody", "deadbeef", "", ".."):
        result = tokens_cli(tokens_file, "revoke", unknown)
        assert result.exit_code == 2
        assert "NAME_OR_ID" in result.stderr
    assert tokens_file.read_bytes() == before

    # by id it is not ambiguous
    assert tokens_cli(tokens_file, "revoke", ids[0]).exit_code == 0
    assert [e["sha256"][:8] for e in json.loads(tokens_file.read_text())["tokens"]] == [ids[1]]


def test_tokens_list_never_shows_a_token_or_a_whole_hash(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    token = create_token(tokens_file, tenant="acme", role="submitter", name="ci")
    digest = hash_token(token)
    for output in ("table", "json"):
        listed = tokens_cli(tokens_file, "list", "-o", output)
        assert listed.exit_code == 0
        assert token not in listed.output
        assert digest not in listed.output
        assert digest[:9] not in listed.output  # the id is 8 hex digits, no more
        assert digest[:8] in listed.output
    [entry] = json.loads(tokens_cli(tokens_file, "list", "-o", "json").stdout)["tokens"]
    assert {k: entry[k] for k in ("id", "name", "tenant", "role")} == {
        "id": digest[:8],
        "name": "ci",
        "tenant": "acme",
        "role": "submitter",
    }


PATHISH_TENANTS = [
    "..",
    ".",
    "A/B",
    "acme/..",
    "../acme",
    "ACME",
    "Acme",
    "",
    "x" * 64,
    "a.b",
    "a_b",
    "-acme",
    "acme\n",
]


@pytest.mark.parametrize("tenant", PATHISH_TENANTS)
def test_pathish_tenant_names_are_refused_by_tokens_create(tmp_path: Path, tenant: str) -> None:
    tokens_file = tmp_path / "var" / "tokens.json"
    result = tokens_cli(tokens_file, "create", "--tenant", tenant, "--role", "submitter")
    assert result.exit_code == 2
    assert "--tenant" in result.stderr
    assert result.stdout == ""  # no token printed
    assert not tokens_file.exists()


def test_the_longest_tenant_name_is_accepted(tmp_path: Path) -> None:
    result = tokens_cli(tmp_path / "tokens.json", "create", "--tenant", "a" * 63, "--role", "submitter")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("tenant", ["..", "A/B", "ACME", "a.b", "x" * 64])
def test_pathish_tenant_names_are_refused_by_dry_runs(store: Store, tmp_path: Path, tenant: str) -> None:
    with ApiServer.start(store, tmp_path) as api:
        body = {"task": {"source": "a.png", "target": "b.png"}, "tenant": tenant}
        response = api.client(OPERATOR).post("/v1/plan", json=body)
        assert response.status_code == 422
        assert response.json()["error"]["field"] == "tenant"


def test_a_metrics_token_is_refused_on_every_task_route(store: Store, tmp_path: Path) -> None:
    with ApiServer.start(store, tmp_path) as api:
        client = api.client(METRICS)
        paths = client.get("/openapi.json")
        assert paths.status_code == 200
        checked = 0
        for path, item in api.client().get("/openapi.json").json()["paths"].items():
            if not path.startswith("/v1/") or path.startswith("/v1/attempts/"):  # callbacks take attempt tokens
                continue
            url = path.replace("{task_id}", "tsk_x").replace("{filename}", "f.png").replace("{version}", "v")
            for method in ("get", "post", "put", "delete", "patch"):
                if method in item:
                    response = client.request(method.upper(), url, json={})
                    assert response.status_code == 403, (method, path, response.text)
                    assert response.json()["error"]["field"] == "authorization"
                    checked += 1
        assert checked >= 10
        assert client.get("/metrics").status_code == 200
        assert client.get("/readyz").status_code == 200


def test_unauthenticated_readyz_shows_nothing_but_the_status(store: Store, tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'never-migrated.db'}")
    try:
        with ApiServer.start(Store(engine), tmp_path) as api:
            response = api.client().get("/readyz")
            assert response.status_code == 503
            assert response.json() == {"error": {"code": "not_ready", "message": "not ready", "field": None}}
            assert "migrations" in api.client(METRICS).get("/readyz").json()["error"]["message"]
    finally:
        engine.dispose()
