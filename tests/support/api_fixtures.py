"""Serve the REST API on a real uvicorn (127.0.0.1) over a given store, with known tokens.

``ApiServer.start(store, tmp_path, **settings)`` returns a running server
(``stop()`` it, or use it as a context manager); ``client(token)`` gives an
httpx client for one caller. Tokens: ``ACME`` and ``GLOBEX`` are submitters
of their tenants, ``OPERATOR`` sees every tenant, ``METRICS`` reads /metrics and the
/readyz detail only; ``TENANT_A`` and ``TENANT_B`` submit for ``tenant-a`` and
``tenant-b`` (the tenant-isolation tests). Local inputs live in the caller's
tenant folder: ``image()`` writes there.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from controlplane.api.app import create_app
from controlplane.api.auth import TokenRegistry, hash_token
from controlplane.api.remote_uris import HostResolver
from controlplane.config import Settings
from controlplane.domain import TaskState
from controlplane.metrics import Metrics
from controlplane.store import Store
from controlplane.store.tables import attempts, events, tasks
from tests.support.asgi_server import serving
from tests.support.storage import offline_host_resolver, write_storage

__all__ = [
    "ACME",
    "GLOBEX",
    "METRICS",
    "MP4_START",
    "OPERATOR",
    "PNG_START",
    "TENANT_A",
    "TENANT_B",
    "TENANT_OF",
    "ApiServer",
    "attempt_token",
    "registry",
    "stored_rows",
]

ACME = "fp_test-acme-submitter-0000000000000000000000"
GLOBEX = "fp_test-globex-submitter-000000000000000000000"
OPERATOR = "fp_test-ops-operator-0000000000000000000000000"
#: a Prometheus scrape credential: /metrics and the /readyz detail, nothing else
METRICS = "fp_test-ops-metrics-00000000000000000000000000"
TENANT_A = "fp_test-tenant-a-submitter-00000000000000000000"
TENANT_B = "fp_test-tenant-b-submitter-00000000000000000000"
#: each test token's tenant
#: the first bytes of a PNG: enough for the submit-time content check (it is not decoded there)
PNG_START = b"\x89PNG\r\n\x1a\n not really a whole image"
MP4_START = b"\x00\x00\x00\x18ftypisom not really a whole video"
TENANT_OF = {ACME: "acme", GLOBEX: "globex", OPERATOR: "ops", TENANT_A: "tenant-a", TENANT_B: "tenant-b"}


def registry() -> TokenRegistry:
    return TokenRegistry(
        [
            {"name": "acme-ci", "tenant": "acme", "role": "submitter", "sha256": hash_token(ACME)},
            {"name": "globex-ci", "tenant": "globex", "role": "submitter", "sha256": hash_token(GLOBEX)},
            {"name": "ops", "tenant": "ops", "role": "operator", "sha256": hash_token(OPERATOR)},
            {"name": "scrape", "tenant": "ops", "role": "metrics", "sha256": hash_token(METRICS)},
            {"name": "a-ci", "tenant": "tenant-a", "role": "submitter", "sha256": hash_token(TENANT_A)},
            {"name": "b-ci", "tenant": "tenant-b", "role": "submitter", "sha256": hash_token(TENANT_B)},
        ]
    )


def attempt_token(name: str) -> tuple[str, str]:
    """A callback token and its sha256 (what the store keeps)."""
    token = f"att-token-{name}"
    return token, hashlib.sha256(token.encode()).hexdigest()


def stored_rows(store: Store) -> tuple[int, int, int]:
    """(tasks, events, attempts) rows: what "nothing stored" compares."""
    with store.engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            for table in (tasks, events, attempts)
        )


@dataclass
class ApiServer:
    url: str
    store: Store
    settings: Settings
    input_root: Path
    output_root: Path
    _stack: contextlib.ExitStack
    _clients: list[httpx.Client] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        store: Store,
        tmp_path: Path,
        *,
        tokens: TokenRegistry | None = None,
        metrics: Metrics | None = None,
        storage: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
        resolve_host: HostResolver = offline_host_resolver,
        app: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> ApiServer:
        """``tokens``: the registry to serve with (default :func:`registry`, the fixed test tokens).

        ``storage``: tenant -> grant (s3_read, s3_write, web_hosts); none: public
        web hosts, no s3. Host names of inputs resolve through ``resolve_host``
        (default: nothing resolves, so no DNS query leaves the machine).
        ``app``: more keywords of ``create_app`` (``stores``, ``storage_of``, ...).
        """
        input_root = tmp_path / "inputs"
        output_root = tmp_path / "outputs"
        input_root.mkdir(exist_ok=True)
        output_root.mkdir(exist_ok=True)
        values: dict[str, Any] = {
            "var_dir": tmp_path / "var",
            "input_roots": (input_root.resolve(),),
            "output_root": output_root.resolve(),
        }
        if storage is not None:
            values["storage_file"] = write_storage(tmp_path / "storage.json", storage)
        values.update(overrides)
        settings = Settings(**values)
        asgi, _fastapi = create_app(
            settings=settings,
            store=store,
            tokens=tokens if tokens is not None else registry(),
            metrics=metrics,
            resolve_host=resolve_host,
            **dict(app or {}),
        )
        stack = contextlib.ExitStack()
        url = stack.enter_context(serving(asgi))
        return cls(url, store, settings, input_root.resolve(), output_root.resolve(), stack)

    def client(self, token: str | None = None, **headers: str) -> httpx.Client:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        client = httpx.Client(base_url=self.url, headers=headers, timeout=10.0)
        self._clients.append(client)
        return client

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        self._stack.close()

    def __enter__(self) -> ApiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers for the tests

    def image(self, name: str = "face.png", data: bytes | None = None, *, tenant: str = "acme") -> str:
        """A file inside ``tenant``'s folder of the input root (by default the first bytes of its kind); its path."""
        path = self.input_root / tenant / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            data = MP4_START if path.suffix.lower() in (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi") else PNG_START
        path.write_bytes(data)
        return str(path)

    def body(self, *, tenant: str = "acme", **overrides: Any) -> dict[str, Any]:
        """A submission body whose inputs are in ``tenant``'s input folder."""
        values: dict[str, Any] = {
            "source": self.image("face.png", tenant=tenant),
            "target": self.image("target.png", tenant=tenant),
        }
        values.update(overrides)
        return values

    def advance_to(self, task_id: str, *states: TaskState) -> None:
        for state in states:
            self.store.transition_task(task_id, wanted=state, actor="test", target="local")
