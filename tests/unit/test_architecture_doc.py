"""docs/architecture.md stays true to the tree: every import contract named, every path it mentions there.

The page may describe a change that is still being merged, inside
``<!-- pending: NAME -->`` ... ``<!-- /pending -->``; the paths only such a
paragraph may name before they exist are listed in ``PENDING_PATHS`` (empty
it, and drop the markers, once the change is merged).
"""

from __future__ import annotations

import ast
import configparser
import re
from pathlib import Path

import pytest

#: paths a pending paragraph names before its change is merged (empty this after merging)
PENDING_PATHS: frozenset[str] = frozenset()

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
#: the top-level folders of the repository a path in the page may start with
ROOTS = (
    "controlplane",
    "providers",
    "faceswap",
    "simulator",
    "bench",
    "tests",
    "docs",
    "policies",
    "deploy",
)
#: the packages whose ``__init__`` must say what lives there
PACKAGE_ROOTS = ("controlplane", "providers", "faceswap", "simulator", "bench")

_PATH = re.compile(r"(?<![\w./-])((?:" + "|".join(ROOTS) + r")/[\w./-]*)")
_BACKTICKED = re.compile(r"`([^`\s]+)`")
_MODULE = re.compile(r"^(?:controlplane|providers|faceswap|simulator)(?:\.\w+)+$")
_PENDING = re.compile(r"<!-- pending: (\w+) -->(.*?)<!-- /pending -->", re.DOTALL)


def split_pending(text: str) -> tuple[str, str]:
    """The page outside pending paragraphs, and the pending paragraphs' text."""
    pending = "\n".join(match.group(2) for match in _PENDING.finditer(text))
    return _PENDING.sub("", text), pending


def repo_paths(text: str) -> set[str]:
    """Every repository path the text names (in backticks, code blocks or prose), trailing punctuation dropped."""
    return {match.group(1).rstrip(".,;:") for match in _PATH.finditer(text)}


def exists(path: str) -> bool:
    return (ROOT / path).is_dir() if path.endswith("/") else (ROOT / path).exists()


def _module_file(parts: list[str]) -> Path | None:
    base = ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_exists(dotted: str) -> bool:
    """A module or package of that name, or a name one of them defines or imports (``faceswap.run_swap``)."""
    *parent, name = dotted.split(".")
    if _module_file([*parent, name]):
        return True
    source = _module_file(parent)
    return source is not None and re.search(rf"\b{re.escape(name)}\b", source.read_text(encoding="utf-8")) is not None


def contract_names() -> list[str]:
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    return [config[section]["name"] for section in config.sections() if section.startswith("importlinter:contract:")]


def test_the_page_names_every_import_contract() -> None:
    text = " ".join(DOC.read_text(encoding="utf-8").split())
    names = contract_names()
    assert len(names) >= 6
    missing = [name for name in names if " ".join(name.split()) not in text]
    assert not missing, f"docs/architecture.md does not name these import-linter contracts: {missing}"


def test_every_path_outside_pending_paragraphs_exists() -> None:
    settled, _ = split_pending(DOC.read_text(encoding="utf-8"))
    missing = sorted(path for path in repo_paths(settled) if not exists(path))
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"


def test_a_pending_paragraph_names_only_existing_or_pending_paths() -> None:
    _, pending = split_pending(DOC.read_text(encoding="utf-8"))
    missing = sorted(path for path in repo_paths(pending) if not exists(path) and path not in PENDING_PATHS)
    assert not missing, f"pending paragraphs name paths that neither exist nor are in PENDING_PATHS: {missing}"


def test_pending_markers_are_paired_and_named() -> None:
    text = DOC.read_text(encoding="utf-8")
    opened = re.findall(r"<!-- pending: (\w+) -->", text)
    assert len(opened) == text.count("<!-- /pending -->") == len(_PENDING.findall(text))
    assert set(opened) <= {"verdict", "runtime", "rooms"}


def test_python_paths_are_written_from_the_repository_root() -> None:
    text = DOC.read_text(encoding="utf-8")
    short = sorted(
        token
        for token in _BACKTICKED.findall(text)
        if token.endswith(".py") and not token.startswith(tuple(root + "/" for root in ROOTS))
    )
    assert not short, f"write these as paths from the repository root: {short}"


def test_dotted_module_names_resolve() -> None:
    settled, _ = split_pending(DOC.read_text(encoding="utf-8"))
    named = (token for token in _BACKTICKED.findall(settled) if _MODULE.match(token))
    unknown = sorted(token for token in named if not module_exists(token))
    assert not unknown, f"docs/architecture.md names modules that do not exist: {unknown}"


def _packages() -> list[Path]:
    return sorted(init for root in PACKAGE_ROOTS for init in (ROOT / root).rglob("__init__.py"))


@pytest.mark.parametrize("init", _packages(), ids=lambda path: str(path.parent.relative_to(ROOT)))
def test_every_package_says_what_lives_there(init: Path) -> None:
    docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    assert docstring, f"{init.relative_to(ROOT)} has no docstring saying what lives in the package"
    assert len(docstring.split()) >= 15, f"{init.relative_to(ROOT)}: say in a paragraph what lives here"
    assert "milestone" not in docstring.lower(), f"{init.relative_to(ROOT)} still speaks of a milestone"


def test_the_checks_catch_what_they_are_for() -> None:
    sample = (
        "see `controlplane/store/nope.py` and providers/base.py.\n"
        "<!-- pending: verdict -->\n`controlplane/domain/verdict.py`\n<!-- /pending -->\n"
    )
    settled, pending = split_pending(sample)
    assert repo_paths(settled) == {"controlplane/store/nope.py", "providers/base.py"}
    assert repo_paths(pending) == {"controlplane/domain/verdict.py"}
    assert not exists("controlplane/store/nope.py")
    assert module_exists("faceswap.run_swap")
    assert module_exists("providers.kubernetes")
    assert not module_exists("controlplane.nowhere")
    assert not module_exists("controlplane.nowhere.thing")
