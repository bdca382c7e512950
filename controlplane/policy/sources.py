"""Where policies come from. For now: JSON files (Consul KV arrives with the policy-engine issue)."""

from __future__ import annotations

import json
from pathlib import Path

from controlplane.policy.model import Policy, PolicyError
from controlplane.policy.parse import parse_policy

__all__ = ["DEFAULT_POLICY_PATH", "MAX_POLICY_BYTES", "load_policy_file", "loads_policy"]

#: the embedded default, used when nothing else is configured
DEFAULT_POLICY_PATH = Path(__file__).resolve().parents[2] / "policies" / "default.json"
#: a policy is a small document; anything bigger is a mistake
MAX_POLICY_BYTES = 1 << 20


def loads_policy(text: str | bytes) -> Policy:
    """Parse a policy from JSON text; :class:`PolicyError` names the bad field's JSON path."""
    if len(text) > MAX_POLICY_BYTES:
        raise PolicyError("", f"is larger than {MAX_POLICY_BYTES} bytes")

    def _no_constants(name: str) -> None:
        raise ValueError(f"{name} is not valid JSON")

    try:
        document = json.loads(text, parse_constant=_no_constants)
    except ValueError as exc:
        raise PolicyError("", f"is not valid JSON: {exc}") from exc
    return parse_policy(document)


def load_policy_file(path: Path | str) -> Policy:
    """Read and validate a policy file.

    Errors are :class:`PolicyError` whose message starts with the JSON path of
    the bad field (``targets[1].provider: must be one of ...``); an unreadable
    or malformed file names the file instead.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError("", f"cannot read {path}: {exc.strerror}") from exc
    try:
        return loads_policy(raw)
    except PolicyError as exc:
        if exc.path:
            raise
        raise PolicyError("", f"{path} {exc.message}") from exc
