"""Environment variables are read in one place per process kind.

The control plane and its CLI read them only in ``controlplane/config.py``;
the worker's face-swap core only in ``faceswap/config.py``; providers get
their values from the runtime builder. An AST scan of every non-test module
holds the tree to that: a new ``os.environ`` / ``os.getenv`` elsewhere fails
here, naming the file and line, unless it is listed below with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("controlplane", "providers", "faceswap", "simulator")
#: the modules that read the environment on purpose
READERS = {
    "controlplane/config.py": "the control plane's and the CLI's settings",
    "faceswap/config.py": "the worker's settings",
}
#: modules that touch the environment for another reason than reading a setting
EXCEPTIONS = {
    # builds the worker subprocess's minimal environment out of this process's (nothing is configured by it)
    "providers/local.py": "passes a child process its environment",
    # the kubernetes client's own variable, read at call time as the client would: the client package reads
    # it once, at import, and the capacity poller's tests (and a long-running poller) change it later
    "providers/kubeconfig.py": "KUBECONFIG for the kubernetes client, as the client reads it",
    # writes, never reads: ORT_DISABLE_TELEMETRY=1 before any module imports onnxruntime
    "faceswap/__init__.py": "switches ONNX Runtime's telemetry off for the process",
}
ENV_NAMES = frozenset({"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"})


def env_reads(tree: ast.AST) -> list[int]:
    """The lines of ``tree`` that reach the process environment through ``os``."""
    lines: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ENV_NAMES:
            if isinstance(node.value, ast.Name) and node.value.id == "os":
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and any(alias.name in ENV_NAMES for alias in node.names)
        ):
            lines.append(node.lineno)
    return sorted(lines)


def modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (REPO / package).rglob("*.py"))


def test_only_the_settings_modules_read_the_environment() -> None:
    found = {
        str(path.relative_to(REPO)): lines
        for path in modules()
        if (lines := env_reads(ast.parse(path.read_text(encoding="utf-8"))))
    }
    stray = {path: lines for path, lines in found.items() if path not in READERS and path not in EXCEPTIONS}
    assert not stray, f"read settings in controlplane/config.py or faceswap/config.py instead: {stray}"
    # an exception that no longer reads the environment is dropped from the list
    assert set(EXCEPTIONS) <= set(found), set(EXCEPTIONS) - set(found)
    assert set(READERS) <= set(found)


@pytest.mark.parametrize(
    ("source", "reads"),
    [
        ("import os\nos.environ.get('X')\n", [2]),
        ("import os\nos.getenv('X')\n", [2]),
        ("import os\nvalue = os.environ['X']\n", [2]),
        ("from os import environ\n", [1]),
        ("from os import getenv as read\n", [1]),
        ("import os\nos.path.join('a', 'b')\n", []),
        ("environ = {}\nenviron.get('X')\n", []),
    ],
)
def test_the_scan_sees_every_way_in(source: str, reads: list[int]) -> None:
    assert env_reads(ast.parse(source)) == reads
