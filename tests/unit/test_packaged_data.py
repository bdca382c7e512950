"""What the wheel must carry is package data, found through the package wherever the process runs.

The wheel itself is built, installed and started in
``tests/integration/test_wheel_install.py`` (slow); these are the quick
checks on the tree it is built from.
"""

from __future__ import annotations

import configparser
import fnmatch
import shutil
from pathlib import Path

import pytest

from controlplane.config import Settings
from controlplane.policy_sources import DEFAULT_POLICY_PATH, load_policy_file
from controlplane.store import migrate
from controlplane.store.migrate import MIGRATIONS_DIR, head_revision

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_POLICY = ROOT / "controlplane" / "policy_sources" / "default.json"


def _package_data() -> dict[str, list[str]]:
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    section = config["options.package_data"]
    return {package: [p.strip() for p in patterns.split(",") if p.strip()] for package, patterns in section.items()}


def test_the_shipped_default_policy_is_a_link_to_the_one_copy_in_git() -> None:
    # a copy could drift from policies/default.json, which the docs and examples name
    assert SHIPPED_POLICY.is_symlink()
    assert SHIPPED_POLICY.resolve() == ROOT / "policies" / "default.json"
    assert DEFAULT_POLICY_PATH == ROOT / "policies" / "default.json"
    assert load_policy_file(DEFAULT_POLICY_PATH).targets


def test_with_no_policy_file_set_serve_reads_the_shipped_one_from_any_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FUSIONPLANE_POLICY_FILE", raising=False)
    assert Settings.from_env().policy_file == DEFAULT_POLICY_PATH
    monkeypatch.setenv("FUSIONPLANE_POLICY_FILE", "mine.json")
    assert Settings.from_env().policy_file == Path("mine.json")


def test_the_migration_scripts_are_found_through_the_package() -> None:
    assert MIGRATIONS_DIR == ROOT / "controlplane" / "store" / "migrations"
    newest = max(path.stem for path in (MIGRATIONS_DIR / "versions").glob("[0-9]*.py"))
    assert head_revision() == newest


@pytest.mark.parametrize("lost", ["env.py", "versions"])
def test_an_install_without_its_migration_scripts_says_so(
    lost: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, broken, ignore=shutil.ignore_patterns(lost))
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", broken)
    with pytest.raises(RuntimeError, match="the migration scripts are missing"):
        migrate.upgrade(url=f"sqlite:///{tmp_path / 'fusionplane.db'}")
    assert not (tmp_path / "fusionplane.db").exists()


def test_every_file_the_wheel_needs_is_named_in_package_data() -> None:
    # modules of a package ship by themselves (env.py); data does only when setup.cfg names it
    declared = _package_data()
    versions = sorted((MIGRATIONS_DIR / "versions").glob("*.py"))
    assert versions
    wanted = {
        "controlplane.policy_sources": [SHIPPED_POLICY],
        "controlplane.store.migrations": [MIGRATIONS_DIR / "script.py.mako", *versions],
    }
    for package, files in wanted.items():
        base = ROOT.joinpath(*package.split("."))
        for path in files:
            name = path.relative_to(base).as_posix()
            assert any(fnmatch.fnmatch(name, pattern) for pattern in declared.get(package, [])), (
                f"{package}: {name} is not in setup.cfg [options.package_data]"
            )
