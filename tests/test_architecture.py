"""Imports point one way (DESIGN.md, "Architecture"): no module of `app` takes part in an import cycle,
the layers contract in pyproject.toml holds, and an import hidden inside a function says why.

The same checks run in `make lint`; here they make the suite fail on a new cycle as well."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CYCLES = ROOT / ".ci" / "import-cycles"


def import_cycles(cwd: Path, package: str = "app") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CYCLES), package], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def test_app_has_no_import_cycle() -> None:
    result = import_cycles(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no cycle between the modules of app" in result.stdout


def test_the_cycle_check_names_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    """The check is not blind: a cycle closed by an import inside a function is listed with its lines."""
    package = tmp_path / "tangled"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from tangled import b\n")
    (package / "b.py").write_text("def later():\n    from tangled import a\n    return a\n")
    (package / "c.py").write_text("from tangled import a\n")  # depends on the cycle, is not part of it
    result = import_cycles(tmp_path, "tangled")
    assert result.returncode == 1
    assert "cycle: tangled.a -> tangled.b -> tangled.a" in result.stdout
    assert "tangled.b imports tangled.a (line 2)" in result.stdout
    assert "tangled.c" not in result.stdout


@pytest.mark.skipif(shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None,
                    reason="import-linter is not installed (it comes with the dev extras)")
def test_the_import_contracts_hold() -> None:
    lint_imports = str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run([lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            check=False, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_module_of_app_has_its_place_in_the_layers() -> None:
    """A module the layers contract does not name is checked by nobody: a new one gets a layer."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in contracts if c["type"] == "layers")
    named = {name.strip() for layer in layers for name in layer.replace("|", ":").split(":")}
    modules = {".".join(("app", *path.relative_to(ROOT / "app").with_suffix("").parts))
               for path in (ROOT / "app").rglob("*.py") if path.name != "__init__.py"}
    unplaced = sorted(m for m in modules
                      if not any(m == n or m.startswith(n + ".") for n in named))
    assert unplaced == []


# An import of app inside a function is a dependency out of sight, and it used to hide cycles. The few kept
# carry a comment on the line saying why (`# local: ...`).
def test_imports_of_app_inside_functions_say_why() -> None:
    unexplained = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        for function in ast.walk(ast.parse(source)):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                         [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
                if (any(name == "app" or name.startswith("app.") for name in names)
                        and "# local:" not in lines[node.lineno - 1]):
                    unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert sorted(set(unexplained)) == []


def test_tests_share_helpers_not_test_modules() -> None:
    """A helper two test modules need lives in a helpers module (tests/helpers/, tests/<domain>/helpers.py):
    importing a test module runs its tests' module-level set-up again and hides where a helper lives."""
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if module and module.startswith("tests.") and module.rsplit(".", 1)[-1].startswith("test_"):
                offenders.append(f"{path.relative_to(ROOT)}: from {module} import …")
    assert not offenders, "\n".join(offenders)


def test_pages_get_their_state_as_arguments_not_on_the_request() -> None:
    """`request.state` carries the request's infrastructure (its database session, who is asking), never a
    page's content: a refused form reaches the item page as an argument of `render_item_page`."""
    infrastructure = {"db", "viewer"}
    smuggled = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, ast.AnnAssign | ast.AugAssign) else [])
            for target in targets:
                if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Attribute)
                        and target.value.attr == "state" and isinstance(target.value.value, ast.Name)
                        and target.value.value.id == "request" and target.attr not in infrastructure):
                    smuggled.append(f"{path.relative_to(ROOT)}:{node.lineno} request.state.{target.attr}")
    assert smuggled == []
