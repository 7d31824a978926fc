"""The import rule of docs/architecture.md, checked on every module of the tree.

- `contract/` (part Protocols, wire messages, image identity, the rig-section base) imports nothing of ours but itself.
- `models/` is pure torch below the worker: every module but the worker, the compress pipeline and the
  interrogation of its models imports only `contract/` and `models/`.
- The domain folders (`acquisition/`, `stimulus/`, `models/`) and the shared rooms (`records/`, `transport/`) may
  take from `controller/` only the rig schema root, the clocks and the trial protocol's rules, never the engine, the
  session runner, the worlds, the CLI or the launcher. The launcher (`transport/launch.py`) is itself a top, like the
  CLI: it starts the processes and reads the session's end, so it may import the session runner.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"contract", "controller", "acquisition", "stimulus", "models", "records", "transport", "bench"}
DOMAIN_AND_ROOMS = ("acquisition", "stimulus", "models", "records", "transport")
CONTROLLER_OPEN_TO_ALL = {"controller.config", "controller.clocks", "controller.protocol"}
LAUNCHER = "transport.launch"
MODELS_ABOVE_TORCH = {
    "models/worker.py",
    "models/compress.py",
    "models/compress_cluster.py",
    "models/interrogate.py",
    "models/interrogate_pages.py",
}


def modules_imported(path: Path) -> set[str]:
    """Every module of ours that `path` imports, at any depth (function-level imports count too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from controller import protocol` imports controller.protocol, not the package.
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in OURS)
    return found


def files_under(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_contract_imports_nothing_of_ours():
    bad = {
        rel(f): sorted(i for i in modules_imported(f) if not i.startswith("contract")) for f in files_under("contract")
    }
    assert not {k: v for k, v in bad.items() if v}


def test_models_below_the_worker_are_pure():
    bad = {}
    for f in files_under("models"):
        if rel(f) in MODELS_ABOVE_TORCH:
            continue
        wrong = sorted(i for i in modules_imported(f) if i.split(".")[0] not in ("contract", "models"))
        if wrong:
            bad[rel(f)] = wrong
    assert not bad


@pytest.mark.parametrize("folder", DOMAIN_AND_ROOMS)
def test_no_import_points_into_the_engine_launcher_or_cli(folder):
    bad = {}
    for f in files_under(folder):
        if rel(f) == "transport/launch.py":
            continue
        wrong = []
        for mod in modules_imported(f):
            if mod.startswith("controller.") and not any(
                mod == ok or mod.startswith(ok + ".") for ok in CONTROLLER_OPEN_TO_ALL
            ):
                wrong.append(mod)
            if mod.startswith(LAUNCHER):
                wrong.append(mod)
            if mod.startswith("bench"):
                wrong.append(mod)
        if wrong:
            bad[rel(f)] = sorted(wrong)
    assert not bad


def test_the_rule_sees_an_engine_import(tmp_path):
    """The check itself: a module that imports the engine is caught, at module and at function level."""
    sample = tmp_path / "sample.py"
    sample.write_text("from controller.engine import SessionEngine\ndef f():\n    from controller import cli\n")
    assert {"controller.engine", "controller.cli"} <= modules_imported(sample)


# -- the tests themselves ---------------------------------------------------------------------------------------
def imported_test_modules(path: Path, placed_at: Path | None = None) -> set[str]:
    """Every test module (a `test_*.py` under tests/) that `path` imports, absolute or relative, at any depth;
    relative imports are read as from `placed_at` (by default the file's own place)."""
    package = rel(placed_at or path).removesuffix(".py").split("/")[:-1]
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module.split(".") if node.module else []
            if node.level:  # `from .test_x import y` in tests/controller/: tests.controller.test_x
                base = package[: len(package) - node.level + 1] + base
            names = [".".join([*base, a.name]) for a in node.names] + [".".join(base)]
        else:
            continue
        found.update(
            n for n in names if n.split(".")[0] == "tests" and any(p.startswith("test_") for p in n.split("."))
        )
    return found


def test_no_test_module_imports_another():
    """What two test modules share lives in tests/helpers.py (plain code) or tests/conftest.py (fixtures): a test
    module imported by another has its fixtures and module-level code run in both and ties the files together."""
    bad = {rel(f): sorted(imported_test_modules(f)) for f in files_under("tests")}
    assert not {k: v for k, v in bad.items() if v}


def test_the_rule_sees_a_test_module_import(tmp_path):
    """The check itself: absolute, relative and function-level imports of a test module are caught; the shared
    helpers are not."""
    sample = tmp_path / "sample.py"
    pkg = "tests"  # apart from the names: a grep of the tree for test modules imported by others stays empty
    sample.write_text(
        f"from {pkg}.helpers import small_rig\n"
        f"from {pkg}.controller.test_session import recorded\n"
        "from .test_engine import batch\n"
        "def f():\n"
        f"    import {pkg}.records.test_report\n"
        f"    from {pkg}.contract import test_messages\n"
    )
    found = imported_test_modules(sample, placed_at=ROOT / "tests" / "controller" / "sample.py")
    assert {
        "tests.controller.test_session.recorded",
        "tests.controller.test_engine.batch",
        "tests.records.test_report",
        "tests.contract.test_messages",
    } <= found
    assert not any(n.startswith("tests.helpers") for n in found)
