"""Fixtures for tests that talk to kmock's emulated Kubernetes API server (registered in tests/conftest.py).

``cluster``: a fresh emulated API server per test; ``client``: the real
kubernetes ``ApiClient`` pointed at it. A module that needs another kind of
cluster defines its own ``cluster``, which takes precedence in that module.
"""

from __future__ import annotations

from collections.abc import Iterator

import kubernetes
import pytest

from tests.support.kmock_cluster import KmockCluster, api_client


@pytest.fixture
def cluster() -> Iterator[KmockCluster]:
    with KmockCluster() as emulated:
        yield emulated


@pytest.fixture
def client(cluster: KmockCluster) -> Iterator[kubernetes.client.ApiClient]:
    made = api_client(cluster.url)
    yield made
    made.close()
