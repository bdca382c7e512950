"""A real Prometheus for a test, on 127.0.0.1 and a free port, and a DCGM-style exporter for it to scrape.

``prometheus`` runs with a fresh TSDB directory (or the one given, to restart
on the same data), a config that scrapes the given loopback targets every
second, and a 1 h retention; it is started, waited on until ``/-/ready``
answers, and stopped by PID at the end (SIGTERM, then SIGKILL after a bounded
wait). :func:`serving_exporter` serves a ``prometheus_client`` registry on
127.0.0.1 so that the test decides every value Prometheus will hold.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from tests.support.loopback import free_port
from tests.support.no_metadata import NO_METADATA_ENV

__all__ = [
    "PROMETHEUS_BIN",
    "PrometheusServer",
    "free_port",
    "missing_binaries",
    "running_prometheus",
    "serving_exporter",
]

PROMETHEUS_BIN = Path(os.environ.get("FUSIONPLANE_PROMETHEUS_BIN", "/usr/bin/prometheus"))
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
START_ATTEMPTS = 3  # another process may take the free port between our probe and the bind

# the test's own reads go straight to loopback, whatever *_proxy the environment sets
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def missing_binaries() -> str | None:
    """Why Prometheus cannot be started here, or ``None`` if it can."""
    if not os.access(PROMETHEUS_BIN, os.X_OK):
        return f"Prometheus is not installed ({PROMETHEUS_BIN} missing; `make system-deps` installs it)"
    return None


@dataclass
class PrometheusServer:
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def query(self, promql: str) -> list[Any]:
        """The raw ``result`` of an instant query, read without the code under test."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with _OPENER.open(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule as ``/api/v1/rules`` reports it (``health``, ``lastError``, ``state``, ...)."""
        with _OPENER.open(f"{self.url}/api/v1/rules", timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]

    def wait_for_rules(
        self, ready: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 15.0
    ) -> list[dict[str, Any]]:
        """Poll :meth:`rules` until ``ready(rules)``; fails with the last answer and the log."""
        deadline = time.monotonic() + timeout_s
        while True:
            rules = self.rules()
            if ready(rules):
                return rules
            if time.monotonic() > deadline:
                raise AssertionError(f"rules still {rules!r} after {timeout_s:g} s\n{self.log_tail()}")
            time.sleep(0.1)

    def wait_for(self, promql: str, ready: Callable[[list[Any]], bool], timeout_s: float = 15.0) -> list[Any]:
        """Poll ``promql`` until ``ready(result)``; fails with the last result and the log."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(promql)
            if ready(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{promql!r} still gives {result!r} after {timeout_s:g} s\n{self.log_tail()}")
            time.sleep(0.1)


def _config(
    scrape_targets: Sequence[str],
    interval_s: float,
    *,
    job_name: str,
    token_file: Path | None,
    rule_files: Sequence[Path],
) -> str:
    every = f"{interval_s:g}s"
    job: dict[str, Any] = {
        "job_name": job_name,
        "scrape_timeout": every,
        "static_configs": [{"targets": list(scrape_targets)}],
    }
    if token_file is not None:
        job["authorization"] = {"type": "Bearer", "credentials_file": str(token_file)}
    config = {
        "global": {"scrape_interval": every, "evaluation_interval": every},
        "scrape_configs": [job],
        "rule_files": [str(path) for path in rule_files],
    }
    return json.dumps(config)  # JSON is YAML: no YAML writer needed


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # graceful: flush the head to the WAL, then exit
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def running_prometheus(
    scrape_targets: Sequence[str] = (),
    *,
    port: int | None = None,
    data_dir: Path | None = None,
    scrape_interval_s: float = 1.0,
    job_name: str = "dcgm",
    bearer_token: str | None = None,
    rule_files: Sequence[Path] = (),
) -> Iterator[PrometheusServer]:
    """Start Prometheus scraping ``scrape_targets`` (``host:port``); always stop it by PID.

    With ``port`` and ``data_dir`` it comes back where a stopped one was, with
    its data (the caller then owns ``data_dir``); otherwise both are fresh and
    the directory is deleted at the end. ``bearer_token`` is sent on every
    scrape (from a 0600 file, as in production); ``rule_files`` are loaded and
    evaluated every ``scrape_interval_s``.
    """
    reason = missing_binaries()
    if reason is not None:
        raise RuntimeError(reason)
    base = Path(tempfile.mkdtemp(prefix="fusionplane-prom-"))
    server: PrometheusServer | None = None
    try:
        token_file = None
        if bearer_token is not None:
            token_file = base / "token"
            token_file.write_text(bearer_token)
            token_file.chmod(0o600)
        config = base / "prometheus.yml"
        config.write_text(
            _config(scrape_targets, scrape_interval_s, job_name=job_name, token_file=token_file, rule_files=rule_files)
        )
        for attempt in range(1, START_ATTEMPTS + 1):
            server = _start(base, config, port or free_port(), data_dir or base / "data")
            try:
                _wait_ready(server)
                break
            except RuntimeError:
                exited = server.process.poll() is not None
                _stop(server.process)
                # only an early exit on a port we picked (most likely taken since) is worth another try
                if not exited or port is not None or attempt == START_ATTEMPTS:
                    raise
        assert server is not None
        yield server
    finally:
        if server is not None:
            _stop(server.process)
        shutil.rmtree(base, ignore_errors=True)


def _start(base: Path, config: Path, port: int, data_dir: Path) -> PrometheusServer:
    log_path = base / "prometheus.log"
    args = [
        str(PROMETHEUS_BIN),
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
        "--query.max-concurrency=4",
        "--web.max-connections=32",
        "--log.level=warn",
    ]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(base), "GOMAXPROCS": "2", **NO_METADATA_ENV}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=base)
    return PrometheusServer(port=port, data_dir=data_dir, process=process, log_path=log_path)


def _wait_ready(server: PrometheusServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            with _OPENER.open(f"{server.url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError as exc:  # refused while it starts, or 503 until the TSDB is open
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"prometheus was not ready in {START_TIMEOUT_S:.0f} s: {exc}\n{server.log_tail()}"
                ) from exc
        time.sleep(0.05)


@contextlib.contextmanager
def serving_exporter(registry: CollectorRegistry) -> Iterator[str]:
    """Serve ``registry`` at ``http://127.0.0.1:<port>/metrics``; yields ``127.0.0.1:<port>``."""
    httpd, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
