"""Azurite's Blob service for the test session, on 127.0.0.1 and a free port, data in memory.

``make setup`` installs it from package.json (``node_modules/.bin/azurite-blob``).
It runs with telemetry off (nothing leaves the machine), the API version check
skipped (the Python SDK may speak a newer version than the emulator knows) and
loose mode (headers it does not know are ignored, not refused). It is stopped
by PID at the end (SIGTERM, then SIGKILL after a bounded wait).

tests/conftest.py registers this module as a plugin, so any test may ask for
the session fixture ``azurite`` (started on first use): the endpoint, the
emulator's well-known account and key, and a connection string.
``azurite_oauth`` is a second one that also takes Entra ID bearer tokens
(``--oauth basic``: their format, lifetime, issuer and audience are checked,
not their signature; Azurite needs HTTPS for it, with a throwaway CA whose
certificate is ``ca_path``), for what only a token holder can do: user
delegation SAS.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.loopback import free_port
from tests.support.no_metadata import NO_METADATA_ENV
from tests.support.tls import write_certificates

__all__ = [
    "ACCOUNT",
    "ACCOUNT_KEY",
    "AZURITE_BLOB",
    "Azurite",
    "EntraTokens",
    "azurite",
    "azurite_oauth",
    "running_azurite",
]

REPO = Path(__file__).resolve().parents[2]
AZURITE_BLOB = REPO / "node_modules" / ".bin" / "azurite-blob"
#: the emulator's one account and its published key (not a secret: the same in every Azurite)
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
START_ATTEMPTS = 3  # another process may take the free port between our probe and the bind


@dataclass(frozen=True)
class Azurite:
    """A running emulator: ``endpoint`` is the account's Blob endpoint (path style)."""

    port: int
    log_path: Path
    #: the CA that signed the server's certificate when it serves HTTPS (``azurite_oauth``); None: plain HTTP
    ca_path: Path | None = None

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.ca_path is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def account(self) -> str:
        return ACCOUNT

    @property
    def key(self) -> str:
        return ACCOUNT_KEY

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol={self.endpoint.split(':')[0]};AccountName={ACCOUNT};"
            f"AccountKey={ACCOUNT_KEY};BlobEndpoint={self.endpoint};"
        )

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class EntraTokens:
    """A ``TokenCredential`` handing out Entra-ID-shaped tokens for storage, as a managed identity would.

    Azurite's basic OAuth checks the shape, lifetime, issuer and audience of
    a token, not its signature, so an unsigned one stands in for the identity
    service (which tests never reach).
    """

    TENANT = "ab1f708d-50f6-404c-a006-d71b2ac7a606"
    OBJECT_ID = "11059fcc-5514-4800-b5f8-49808b9cfab6"

    def get_token(self, *scopes: str, **_options: object) -> Any:
        from azure.core.credentials import AccessToken

        now = int(time.time())
        claims = {
            "aud": "https://storage.azure.com",
            "iss": f"https://sts.windows.net/{self.TENANT}/",
            "iat": now - 60,
            "nbf": now - 60,
            "exp": now + 3600,
            "oid": self.OBJECT_ID,
            "tid": self.TENANT,
        }

        def part(value: dict[str, object]) -> str:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

        token = f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.{part({'unsigned': True})}"
        return AccessToken(token, now + 3600)


def missing() -> str | None:
    """Why Azurite cannot be started here, or None if it can."""
    if not os.access(AZURITE_BLOB, os.X_OK):
        return f"Azurite is not installed ({AZURITE_BLOB} missing; `make setup` runs npm ci)"
    if shutil.which("node") is None:
        return "Node.js is not installed (`make setup` installs Debian's nodejs)"
    return None


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


def _start(workdir: Path, tls: tuple[Path, Path, Path] | None) -> tuple[Azurite, subprocess.Popen[bytes]]:
    port = free_port()
    server = Azurite(port=port, log_path=workdir / "azurite.log", ca_path=tls[0] if tls else None)
    args = [
        str(AZURITE_BLOB),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--inMemoryPersistence",
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--loose",
    ]
    if tls is not None:
        args += ["--oauth", "basic", "--cert", str(tls[1]), "--key", str(tls[2])]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir), **NO_METADATA_ENV}
    with open(server.log_path, "ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    return server, process


def _wait_ready(server: Azurite, process: subprocess.Popen[bytes]) -> None:
    """Until the port accepts a connection (Azurite listens once its stores are ready), bounded."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"azurite-blob exited with {process.returncode}:\n{server.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1.0):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"azurite did not listen in {START_TIMEOUT_S:.0f} s: {exc}\n{server.log_tail()}"
                ) from exc
            time.sleep(0.05)


@contextlib.contextmanager
def running_azurite(tls: tuple[Path, Path, Path] | None = None) -> Iterator[Azurite]:
    """Start the emulator's Blob service; always stop it (by PID) and delete its files.

    ``tls``: ``(ca.pem, server.pem, server.key)`` to serve HTTPS and take bearer tokens (``--oauth basic``).
    """
    reason = missing()
    if reason is not None:
        raise RuntimeError(reason)
    workdir = Path(tempfile.mkdtemp(prefix="fusionplane-azurite-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        for attempt in range(1, START_ATTEMPTS + 1):
            server, process = _start(workdir, tls)
            try:
                _wait_ready(server, process)
                break
            except RuntimeError:
                exited = process.poll() is not None
                _stop(process)
                if not exited or attempt == START_ATTEMPTS:
                    raise
        yield server
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


def _skip_unless_installed() -> None:
    reason = missing()
    if reason is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must test Blob storage on Azurite: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One emulator for the whole session (tests use their own containers); skipped where it cannot run, except CI."""
    _skip_unless_installed()
    with running_azurite() as server:
        yield server


@pytest.fixture(scope="session")
def azurite_oauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """An emulator on HTTPS that also takes bearer tokens (see the module docstring)."""
    _skip_unless_installed()
    with running_azurite(write_certificates(tmp_path_factory.mktemp("azurite-tls"))) as server:
        yield server
