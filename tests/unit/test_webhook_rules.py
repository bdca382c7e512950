"""The pure rules of webhooks: which states are told, the signature, secrets, and the documented retry schedule."""

from __future__ import annotations

import base64

import pytest

from controlplane.config import WebhookDeliverySettings
from controlplane.domain.webhooks import parse_secret, signature_header, told_states, verify_signature
from controlplane.scheduler.webhooks import JITTER, retry_delay_s

KEY = base64.b64encode(b"z" * 32).decode()


def test_outcomes_are_always_told_and_running_only_when_asked() -> None:
    assert told_states([]) == ("succeeded", "failed", "cancelled")
    assert told_states(["running"]) == ("succeeded", "failed", "cancelled", "running")
    assert "queued" not in told_states(["queued"])


def test_a_signature_verifies_only_for_its_id_timestamp_body_and_key() -> None:
    secret, other = parse_secret(f"whsec_{KEY}"), parse_secret("whsec_" + base64.b64encode(b"y" * 32).decode())
    header = signature_header([secret], "msg_1", 1_700_000_000, b'{"a":1}')
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "1700000000", "webhook-signature": header}
    assert verify_signature(secret, headers, b'{"a":1}')
    assert not verify_signature(other, headers, b'{"a":1}')
    assert not verify_signature(secret, headers, b'{"a":2}')
    assert not verify_signature(secret, {**headers, "webhook-id": "msg_2"}, b'{"a":1}')
    assert not verify_signature(secret, {**headers, "webhook-timestamp": "1700000001"}, b'{"a":1}')


def test_a_rotation_signs_with_both_keys() -> None:
    new, old = parse_secret(f"whsec_{KEY}"), parse_secret("whsec_" + base64.b64encode(b"o" * 40).decode())
    header = signature_header([new, old], "msg_1", 1, b"{}")
    assert len(header.split()) == 2
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "1", "webhook-signature": header}
    assert verify_signature(new, headers, b"{}")
    assert verify_signature(old, headers, b"{}")


@pytest.mark.parametrize("text", [KEY, "whsec_", "whsec_" + base64.b64encode(b"s" * 8).decode(), "whsec_not base64!"])
def test_bad_secrets_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="webhook secret"):
        parse_secret(text)


def test_the_retry_waits_double_within_the_jitter_band_up_to_the_cap() -> None:
    for tries, nominal in ((1, 5.0), (2, 10.0), (3, 20.0), (10, 2560.0), (20, 3600.0)):
        low = retry_delay_s(tries, base_s=5.0, max_s=3600.0, draw=0.0)
        high = retry_delay_s(tries, base_s=5.0, max_s=3600.0, draw=0.999999)
        assert low == pytest.approx(nominal * (1 - JITTER))
        assert high == pytest.approx(nominal * (1 + JITTER), rel=1e-5)


def test_the_default_window_is_the_documented_43_minutes() -> None:
    shipped = WebhookDeliverySettings()
    waits = [
        retry_delay_s(n, base_s=shipped.retry_base_s, max_s=shipped.retry_max_s, draw=0.5)
        for n in range(1, shipped.max_attempts)
    ]
    assert shipped.max_attempts == 10
    assert sum(waits) / 60 == pytest.approx(42.6, abs=0.1)
