"""No SDK in a test may reach a cloud metadata address: the guards are on in every test environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO
from tests.support.no_metadata import NO_METADATA_ENV, subprocess_env

_SHOW_ENV = "import json, os, sys; print(json.dumps({k: os.environ.get(k) for k in sys.argv[1:]}))"


def test_the_test_process_has_the_metadata_guards() -> None:
    assert NO_METADATA_ENV["AWS_EC2_METADATA_DISABLED"] == "true"
    # azure-identity has no "off" switch: the IMDS host it would ask is loopback, where nothing answers
    assert NO_METADATA_ENV["AZURE_POD_IDENTITY_AUTHORITY_HOST"].startswith("http://127.0.0.1:")
    for name, value in NO_METADATA_ENV.items():
        assert os.environ.get(name) == value, name


def test_a_spawned_subprocess_gets_the_guards_whatever_its_caller_asks() -> None:
    # what the serve and worker subprocesses of the tests are started with
    env = subprocess_env(
        {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        AWS_EC2_METADATA_DISABLED="false",
        AZURE_POD_IDENTITY_AUTHORITY_HOST="http://169.254.169.254",
        FUSIONPLANE_VAR_DIR="/nonexistent",
    )
    done = subprocess.run(
        [sys.executable, "-c", _SHOW_ENV, *NO_METADATA_ENV, "FUSIONPLANE_VAR_DIR"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    seen = json.loads(done.stdout)
    assert seen == {**NO_METADATA_ENV, "FUSIONPLANE_VAR_DIR": "/nonexistent"}
    # the default base is this process's environment, which already has them
    assert subprocess_env()["AWS_EC2_METADATA_DISABLED"] == "true"


def test_make_test_and_ci_set_the_guards_before_pytest_starts() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\ntest: setup\n", 1)[1].split("\n\n", 1)[0]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    for name, value in NO_METADATA_ENV.items():
        assert f"{name}={value}" in recipe, name
        assert f"export {name}={value}" in ci, name
