"""Webhooks in the submitter's words: which task states are told, the event body, and its signature.

Signatures follow the Standard Webhooks specification: the secret is
``whsec_`` and base64 of its key bytes; the signed text is
``"{webhook-id}.{webhook-timestamp}.{body}"``; the ``webhook-signature``
header carries ``v1,<base64 of HMAC-SHA256>`` once per secret in force,
space separated, so a receiver that knows either secret of a rotation
accepts the message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "ALWAYS_TOLD",
    "OPTIONAL_TOLD",
    "SECRET_PREFIX",
    "TRANSITION_EVENT",
    "WebhookSecret",
    "parse_secret",
    "signature_header",
    "signed_content",
    "told_states",
    "verify_signature",
]

#: the kind of the event a task's change of state writes (controlplane/store/core.py writes it; the outbox reads it)
TRANSITION_EVENT = "task.transition"
#: the states every task with a notify URL is told about
ALWAYS_TOLD = ("succeeded", "failed", "cancelled")
#: the states a task may ask for besides (``notify_events``)
OPTIONAL_TOLD = ("running",)
SECRET_PREFIX = "whsec_"
#: shorter keys are guessable; the specification recommends 24 to 64 bytes
_MIN_KEY_BYTES = 24
_MAX_KEY_BYTES = 64


@dataclass(frozen=True, repr=False)
class WebhookSecret:
    """One signing key; its repr never shows the key (logs, tracebacks)."""

    key: bytes

    def __repr__(self) -> str:
        return "WebhookSecret(<hidden>)"


def parse_secret(text: str) -> WebhookSecret:
    """``whsec_<base64>`` as a secret, or ValueError saying what is wrong (never echoing the value)."""
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(text[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ and standard base64") from None
    if not _MIN_KEY_BYTES <= len(key) <= _MAX_KEY_BYTES:
        raise ValueError(f"a webhook secret's key is {_MIN_KEY_BYTES} to {_MAX_KEY_BYTES} bytes")
    return WebhookSecret(key)


def told_states(asked: Iterable[str]) -> tuple[str, ...]:
    """The states a task is told about: the outcomes always, plus the optional ones it asked for, in order."""
    extra = set(asked)
    return ALWAYS_TOLD + tuple(state for state in OPTIONAL_TOLD if state in extra)


def signed_content(message_id: str, timestamp: int, body: bytes) -> bytes:
    """What the signature covers: ``id.timestamp.body``."""
    return f"{message_id}.{timestamp}.".encode() + body


def _sign(secret: WebhookSecret, content: bytes) -> str:
    return base64.b64encode(hmac.new(secret.key, content, hashlib.sha256).digest()).decode()


def signature_header(secrets: Iterable[WebhookSecret], message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<sig>`` per secret, space separated (two during a rotation)."""
    content = signed_content(message_id, timestamp, body)
    return " ".join(f"v1,{_sign(secret, content)}" for secret in secrets)


def verify_signature(secret: WebhookSecret, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether any ``v1`` signature in ``headers`` is ``secret``'s over this message (constant-time compare)."""
    content = signed_content(headers["webhook-id"], int(headers["webhook-timestamp"]), body)
    expected = _sign(secret, content)
    offered = (part.split(",", 1) for part in headers.get("webhook-signature", "").split())
    return any(len(p) == 2 and p[0] == "v1" and hmac.compare_digest(p[1], expected) for p in offered)
