"""Fuzz the REST API from its own OpenAPI document with schemathesis: no 5xx, ever.

The schema is fetched from a real uvicorn (127.0.0.1) serving the app over a
migrated SQLite store, and every operation is called with an operator's
bearer token (so requests reach the handlers, not just the auth check), with
both schema-conforming and schema-violating data.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from sqlalchemy import create_engine

from controlplane.api.app import create_app
from controlplane.api.auth import TokenRegistry
from controlplane.config import Settings
from controlplane.domain import TaskState
from controlplane.store import Store, make_engine, upgrade
from tests.support.api_fixtures import OPERATOR, ApiServer, attempt_token
from tests.support.tus import create

MAX_EXAMPLES = 30
#: operations with nothing to vary (GET /healthz) still run a few distinct cases
MIN_CALLS = 1


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("fuzz")
    engine = make_engine(f"sqlite:///{root / 'fuzz.db'}")
    upgrade(engine=engine)
    store = Store(engine)
    try:
        with ApiServer.start(store, root, max_body_bytes=4096, max_upload_bytes=64 * 1024) as api:
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
    return schemathesis.openapi.from_url(f"{served.url}/openapi.json")


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    published = {op.ok().label for op in api_schema.get_all_operations()}
    assert published == set(LABELS)
    assert "POST /v1/tasks" in published


@pytest.mark.parametrize("label", LABELS)
def test_no_server_errors(api_schema: Any, served: ApiServer, label: str) -> None:
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
        response = case.call_and_validate(base_url=served.url, headers=headers, checks=[not_a_server_error], timeout=10)
        statuses.append(response.status_code)

    statuses: list[int] = []
    call()
    assert len(statuses) >= MIN_CALLS, f"{label}: only {len(statuses)} requests made"


def test_the_fuzzed_server_still_answers(served: ApiServer) -> None:
    assert served.client().get("/readyz").status_code == 200
    assert Path(served.settings.output_root).is_dir()
