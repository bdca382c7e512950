"""Fuzz the REST API from its own OpenAPI document with schemathesis, every check on: the document is the contract.

The schema is fetched from a real uvicorn (127.0.0.1) serving the app over a
migrated SQLite store, and every operation is called with an operator's
bearer token (so requests reach the handlers, not just the auth check), with
both schema-conforming and schema-violating data. Each answer must be
documented (status, content type, body schema, headers); data the schema
allows must be accepted and data it forbids refused; and never a 5xx.

The statuses added to schemathesis' defaults, each with its reason, are the
project's ``schemathesis.toml`` (the CLI reads the same file). Its one
allowance for schema-valid data, a 422 on a task, plan or upload, is
narrowed here to the fields in ``DEPENDS_ON_STATE``: whether a local input
exists under the tenant's folder, a host (an input's or the notify URL's) resolves, a policy's rules name its
own targets, or an upload's base64-encoded file name is safe, is the
server's state or beyond JSON Schema (the 422 still names the field).

Budget: 28 operations x at most ``MAX_EXAMPLES`` cases; about 40 s on a 2-core CI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import create_engine

from controlplane.api.app import create_app
from controlplane.api.auth import TokenRegistry
from controlplane.config import Settings
from controlplane.domain import TaskState
from controlplane.store import Store, make_engine, upgrade
from tests.support.api_fixtures import OPERATOR, ApiServer, attempt_token
from tests.support.tus import create

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 30
#: operations with nothing to vary (GET /healthz) still run a few distinct cases
MIN_CALLS = 1

#: per operation, the fields whose schema-valid values the server may still refuse with a 422 (module docstring)
DEPENDS_ON_STATE: dict[str, tuple[str, ...]] = {
    "POST /v1/tasks": ("source", "target", "output", "notify_url"),
    "POST /v1/plan": ("policy", "signals", "task.source", "task.target", "task.output", "task.notify_url"),
    "POST /v1/uploads/": ("Upload-Metadata",),
}
#: the statuses schemathesis expects, as the project widens them (and its hooks: how a tus chunk is sent)
CONFIG = Path(__file__).resolve().parents[2] / "schemathesis.toml"

load_all_checks()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("fuzz")
    engine = make_engine(f"sqlite:///{root / 'fuzz.db'}")
    upgrade(engine=engine)
    store = Store(engine)
    try:
        # GET /v1/events streams until its bound: a short one, so each fuzzed call ends
        with ApiServer.start(
            store, root, max_body_bytes=4096, max_upload_bytes=64 * 1024, events_stream_seconds=0.2
        ) as api:
            # something real to find: a task with a live attempt, so fuzzed requests also reach
            # the handlers past the "no such task/attempt" checks
            task = api.client(OPERATOR).post("/v1/tasks", json=api.body(tenant="ops"))
            task.raise_for_status()
            api.advance_to(task.json()["id"], TaskState.PLANNED, TaskState.LAUNCHING)
            _token, digest = attempt_token("fuzz")
            store.create_attempt(task_id=task.json()["id"], target="local", provider="local", token_sha256=digest)
            yield api
    finally:
        engine.dispose()


def _operation_labels() -> list[str]:
    """Every operation in the app's OpenAPI, known at collection time (building the app touches no database)."""
    _asgi, app = create_app(settings=Settings(), store=Store(create_engine("sqlite://")), tokens=TokenRegistry([]))
    methods = ("get", "head", "options", "put", "post", "patch", "delete")
    return [f"{m.upper()} {path}" for path, item in app.openapi()["paths"].items() for m in methods if m in item]


LABELS = _operation_labels()


@pytest.fixture(scope="module")
def api_schema(served: ApiServer) -> Any:
    """The OpenAPI document as the running server publishes it."""
    return schemathesis.openapi.from_url(f"{served.url}/openapi.json", config=SchemathesisConfig.from_path(CONFIG))


def _accepted_unless_state_says_no(label: str) -> Any:
    """schemathesis' positive_data_acceptance, but a 422 on a ``DEPENDS_ON_STATE`` field is a fair answer."""
    fields = DEPENDS_ON_STATE.get(label, ())

    def check(ctx: Any, response: Any, case: Any) -> bool | None:
        if response.status_code == 422 and case.meta is not None and case.meta.generation.mode.is_positive:
            # schemathesis.toml allows these operations any 422; here only one on a state-dependent field
            error = response.json()["error"]
            assert str(error["field"]).startswith(fields), f"{label}: schema-valid data refused: {error}"
            return None
        return positive_data_acceptance(ctx, response, case)

    check.__name__ = "positive_data_acceptance_but_state"
    return check


def _checks(label: str) -> list[Any]:
    """Every check schemathesis has, positive_data_acceptance narrowed as above where the label needs it."""
    if label not in DEPENDS_ON_STATE:
        return CHECKS.get_all()
    return [c for c in CHECKS.get_all() if c is not positive_data_acceptance] + [_accepted_unless_state_says_no(label)]


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    published = {op.ok().label for op in api_schema.get_all_operations()}
    assert published == set(LABELS)
    assert "POST /v1/tasks" in published


@pytest.mark.parametrize("label", LABELS)
def test_every_answer_is_documented(api_schema: Any, served: ApiServer, label: str) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label
    token = OPERATOR
    real: dict[str, str] = {}
    if "{task_id}" in label:
        real["task_id"] = served.store.list_tasks(limit=1)[0][0].id
    if "{attempt_id}" in label:
        real["attempt_id"] = served.store.live_attempts()[0].id if served.store.live_attempts() else "att_gone"
        token = attempt_token("fuzz")[0]  # the attempt's own token: callbacks get past auth
    if "{filename}" in label:
        real["filename"] = "fuzzed.png"
    if "{upload_id}" in label:
        real["upload_id"] = create(served.client(OPERATOR), 1024).rsplit("/", 1)[1]  # a resumable upload of ops
    headers = {"Authorization": f"Bearer {token}"}
    # valid and invalid data mixed, with generated and with real path parameters;
    # operations with nothing to break have no negative cases, which then do not come up
    cases = operation.as_strategy(generation_mode=GenerationMode.POSITIVE) | operation.as_strategy(
        generation_mode=GenerationMode.NEGATIVE
    )
    if real:
        cases = cases | operation.as_strategy(generation_mode=GenerationMode.POSITIVE, path_parameters=real)

    @given(case=cases)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def call(case: Any) -> None:
        response = case.call_and_validate(base_url=served.url, headers=headers, checks=checks, timeout=10)
        statuses.append(response.status_code)

    checks = _checks(label)
    statuses: list[int] = []
    call()
    assert len(statuses) >= MIN_CALLS, f"{label}: only {len(statuses)} requests made"


def test_the_fuzzed_server_still_answers(served: ApiServer) -> None:
    assert served.client().get("/readyz").status_code == 200
    assert Path(served.settings.output_root).is_dir()
