"""Callback URLs only this machine could reach: loopback, unspecified, localhost, in every spelling."""

from __future__ import annotations

import pytest

from controlplane.domain import Target
from controlplane.runtime.callbacks import callback_refusal, unreachable_callback_host

CLOUD = Target(name="spot", provider="aws", private=False)
UNCONFIGURED = Target(name="aws", provider="aws", private=False, not_configured="no launch settings")
POD = Target(name="onprem", provider="kubernetes", private=True)
HERE = Target(name="here", provider="local", private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://127.1.2.3",
        "http://localhost:8080",
        "http://LOCALHOST:8080",
        "http://api.localhost",
        "http://[::1]:8080",
        "http://0.0.0.0:8080",
        "http://[::]:8080",
        "http://",
        "http://[::1",
    ],
)
def test_loopback_and_unspecified_hosts_are_this_machine_only(url: str) -> None:
    assert unreachable_callback_host(url) is not None
    assert callback_refusal(url, [HERE, POD]) is not None


@pytest.mark.parametrize(
    "url", ["https://cp.example.com", "http://10.0.0.5:8080", "http://[fd00::5]:8080", "http://127.0.0.1.nip.io"]
)
def test_a_routable_address_or_a_name_is_accepted(url: str) -> None:
    assert unreachable_callback_host(url) is None
    assert callback_refusal(url, [CLOUD, POD]) is None


def test_only_targets_that_can_launch_elsewhere_count() -> None:
    assert callback_refusal("http://127.0.0.1:8080", [HERE]) is None
    assert callback_refusal("http://127.0.0.1:8080", [HERE, UNCONFIGURED]) is None
    refusal = callback_refusal("http://127.0.0.1:8080", [HERE, CLOUD, POD])
    assert refusal is not None
    assert refusal.startswith("FUSIONPLANE_PUBLIC_URL: workers of onprem (kubernetes), spot (aws)")
