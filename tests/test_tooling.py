"""The promises of the build: the lock files cover what the code imports and match pyproject.toml,
`make` picks the newest supported Python and keeps .venv in step with it and with the locks, and
`make lint` runs ruff, mypy, bandit and an audit that says so when it could not check anything."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
RELOCK = "pyproject.toml and the lock files disagree: run `make lock` and commit both lock files"


def read_lock(name: str) -> dict[str, list[tuple[Version, str, list[str]]]]:
    """Package name -> its entries (version, environment marker, hashes); universal locks may pin one
    package twice, for different Pythons."""
    text = (ROOT / name).read_text().replace("\\\n", " ")
    entries: dict[str, list[tuple[Version, str, list[str]]]] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement, _, hashes = line.partition("--hash=")
        spec, _, marker = requirement.partition(";")
        match = re.fullmatch(r"\s*([A-Za-z0-9._-]+)==(\S+)\s*", spec)
        assert match, f"{name}: not an exact pin: {line[:80]!r}"
        entries.setdefault(canonicalize_name(match[1]), []).append(
            (Version(match[2]), marker.strip(), re.findall(r"sha256:[0-9a-f]{64}", "--hash=" + hashes)))
    return entries


RUNTIME_LOCK = read_lock("requirements.lock")
DEV_LOCK = read_lock("requirements-dev.lock")


def declared(group: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, group)}


RUNTIME = declared(PYPROJECT["project"]["dependencies"])
DEV = declared(PYPROJECT["project"]["optional-dependencies"]["dev"])


def third_party_imports(*folders: str) -> dict[str, set[str]]:
    """Top-level module -> the files importing it, for every absolute import (function-local and
    TYPE_CHECKING ones included) that is neither the standard library nor the project's own code."""
    own = {"app", "tests", "bench", "migrations"}
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            if "node_modules" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in own and top != "__future__":
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def distributions_of(modules: dict[str, set[str]]) -> dict[str, str]:
    """Distribution (canonical name) -> one module it provides, for the imported modules."""
    providers = importlib.metadata.packages_distributions()
    result: dict[str, str] = {}
    for module, files in modules.items():
        assert module in providers, f"{module} (imported by {min(files)}) is not installed at all"
        for distribution in providers[module]:
            result[canonicalize_name(distribution)] = module
    return result


class TestLocks:
    def test_every_package_the_running_app_imports_is_declared_and_locked(self):
        # app/ and migrations/ run in production, where only requirements.lock is installed: a package
        # that arrives only because another one needs it today can disappear with that one's update.
        needed = distributions_of(third_party_imports("app", "migrations"))
        assert needed, "the import scan found nothing: it is broken"
        undeclared = {d: m for d, m in needed.items() if d not in RUNTIME}
        assert not undeclared, f"imported by app/ but not in [project] dependencies: {undeclared}"
        unlocked = sorted(set(needed) - set(RUNTIME_LOCK))
        assert not unlocked, f"{unlocked}: {RELOCK}"

    def test_every_package_the_tests_and_benchmarks_import_is_in_the_dev_lock(self):
        needed = distributions_of(third_party_imports("tests", "bench"))
        missing = sorted(set(needed) - set(DEV_LOCK))
        assert not missing, f"{missing}, imported by tests/ or bench/: add to the dev extra, then {RELOCK}"

    def test_test_only_packages_stay_out_of_the_runtime(self):
        # httpx serves the tests' AsyncClient; the app reaches OIDC providers through httpx2.
        assert "httpx" in DEV and "httpx" not in RUNTIME
        for tool in ("pytest", "bandit", "pip-audit", "ruff", "mypy", "types-authlib", "uv"):
            assert tool not in RUNTIME_LOCK, f"{tool} would be installed in production"

    @pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
    def test_every_pin_is_exact_and_hashed(self, lock):
        entries = read_lock(lock)
        assert len(entries) > 20
        unhashed = [name for name, pins in entries.items() for _, _, hashes in pins if not hashes]
        assert not unhashed, f"{lock}: pins without hashes, pip --require-hashes refuses them: {unhashed}"

    @pytest.mark.parametrize(("lock", "groups"), [("requirements.lock", [RUNTIME]),
                                                  ("requirements-dev.lock", [RUNTIME, DEV])])
    def test_every_declared_dependency_is_locked_at_a_version_pyproject_allows(self, lock, groups):
        entries = read_lock(lock)
        for group in groups:
            for name, requirement in group.items():
                assert name in entries, f"{name} is not in {lock}: {RELOCK}"
                for version, _, _ in entries[name]:
                    assert requirement.specifier.contains(version, prereleases=True), (
                        f"{lock} pins {name}=={version}, pyproject.toml asks {requirement}: {RELOCK}")

    def test_redis_comes_with_the_rate_limits_that_use_it(self):
        # REDIS_URL hands limits a redis:// storage; the client library is limits' `redis` extra.
        assert "redis" in RUNTIME["limits"].extras and "redis" in RUNTIME_LOCK

    def test_the_dev_lock_pins_the_runtime_packages_at_the_same_versions(self):
        # `make test` runs the suite against exactly what `make run` and the Dockerfile install.
        for name, pins in RUNTIME_LOCK.items():
            assert {(v, m) for v, m, _ in DEV_LOCK.get(name, [])} == {(v, m) for v, m, _ in pins}, (
                f"{name}: {RELOCK}")

    def test_the_locks_cover_every_supported_python(self):
        # A universal lock made for the oldest supported Python holds the wheels of all of them.
        assert PYPROJECT["project"]["requires-python"] == ">=3.11,<3.14"
        lock_command = makefile_text().split("\nLOCK = ", 1)[1].split("\n\n", 1)[0]
        assert "--universal" in lock_command and "--generate-hashes" in lock_command
        assert f"--python-version {supported_pythons()[-1]}" in lock_command
        assert "--constraint requirements.lock" in makefile_text()
        assert PYPROJECT["tool"]["ruff"]["target-version"] == "py" + supported_pythons()[-1].replace(".", "")


def makefile_text() -> str:
    return (ROOT / "Makefile").read_text()


def supported_pythons() -> list[str]:
    """The minor versions requires-python admits, newest first."""
    spec = SpecifierSet(PYPROJECT["project"]["requires-python"])
    return [f"3.{minor}" for minor in range(20, 5, -1) if f"3.{minor}.0" in spec]


def fake_python(folder: Path, name: str, *, works: bool) -> Path:
    """A `pythonX.Y` on PATH: a working one runs this interpreter; a broken one fails like a pyenv shim
    for a version that is installed but not selected."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if works:
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    else:
        path.write_text(f'#!/bin/sh\necho "pyenv: {name}: command not found" >&2\nexit 127\n')
    path.chmod(0o755)
    return path


def run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=False, cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


class TestPythonChoice:
    def test_find_python_knows_the_versions_pyproject_allows(self):
        script = (ROOT / ".ci/find-python").read_text()
        assert f'SUPPORTED="{" ".join(supported_pythons())}"' in script

    def test_the_newest_python_that_runs_wins(self, tmp_path):
        fake_python(tmp_path / "bin", "python3.13", works=False)  # a pyenv shim for an unselected version
        newest = fake_python(tmp_path / "bin", "python3.12", works=True)
        fake_python(tmp_path / "bin", "python3.11", works=True)
        found = run([str(ROOT / ".ci/find-python")], ROOT, PATH=f"{tmp_path / 'bin'}:/usr/bin:/bin",
                    PYENV_ROOT=str(tmp_path / "no-pyenv"))
        assert found.returncode == 0, found.stderr
        assert found.stdout.strip() == str(newest)

    def test_pyenv_versions_that_are_installed_but_not_selected_count(self, tmp_path):
        fake_python(tmp_path / "bin", "python3.11", works=True)
        fake_python(tmp_path / "pyenv/versions/3.13.0/bin", "python3.13", works=True)
        newest = fake_python(tmp_path / "pyenv/versions/3.13.2/bin", "python3.13", works=True)
        found = run([str(ROOT / ".ci/find-python")], ROOT, PATH=f"{tmp_path / 'bin'}:/usr/bin:/bin",
                    PYENV_ROOT=str(tmp_path / "pyenv"))
        assert found.stdout.strip() == str(newest)

    def test_without_a_supported_python_it_says_so(self, tmp_path):
        fake_python(tmp_path / "bin", "python3.12", works=False)
        # Only the folder of our fakes and the shell's tools: no real python3.1x there.
        tools = tmp_path / "tools"
        tools.mkdir()
        for tool in ("ls", "sort", "sed", "tr"):
            (tools / tool).symlink_to(shutil.which(tool))
        found = run(["/bin/sh", str(ROOT / ".ci/find-python")], ROOT, PATH=f"{tmp_path / 'bin'}:{tools}",
                    PYENV_ROOT=str(tmp_path / "no-pyenv"))
        assert found.returncode == 1
        assert "no Python 3.13/3.12/3.11" in found.stderr and "PYTHON=" in found.stderr


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of what the Makefile reads, to dry-run it (`make -n`) without touching the real .venv."""
    for name in ("Makefile", "pyproject.toml", "requirements.lock", "requirements-dev.lock", "bandit.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".ci").mkdir()
    for name in ("find-python", "audit"):
        shutil.copy(ROOT / ".ci" / name, tmp_path / ".ci" / name)
    return tmp_path


def dry_run(project: Path, *args: str, **env: str) -> list[str]:
    result = run(["make", "-n", *args], project, **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def venv_maker(folder: Path, name: str) -> Path:
    """A `pythonX.Y` that is this interpreter, except that `-m venv DIR` only lays out DIR/bin/python
    (this interpreter again) and notes who made it: a real venv with pip takes seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"""#!/bin/sh
if [ "$1 $2" = "-m venv" ]; then
    mkdir -p "$3/bin" && printf '#!/bin/sh\\nexec "{sys.executable}" "$@"\\n' > "$3/bin/python"
    chmod +x "$3/bin/python" && echo "$0" > "$3/made-by"
    exit
fi
exec "{sys.executable}" "$@"
""")
    path.chmod(0o755)
    return path


def make(project: Path, *args: str, **env: str) -> str:
    result = run(["make", *args], project, **env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


class TestMakefile:
    def test_make_builds_the_venv_with_the_python_find_python_chose(self, project, tmp_path):
        newest = venv_maker(tmp_path / "bin", "python3.13")
        make(project, "venv", PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
        assert (project / ".venv/made-by").read_text().strip() == str(newest)

    def test_python_on_the_command_line_overrides_the_choice(self, project, tmp_path):
        chosen = venv_maker(tmp_path / "elsewhere", "python3")
        make(project, "venv", f"PYTHON={chosen}")
        assert (project / ".venv/made-by").read_text().strip() == str(chosen)

    def test_a_venv_made_by_another_python_is_replaced(self, project, tmp_path):
        python = venv_maker(tmp_path / "bin", "python3.13")
        old = project / ".venv/bin/python"
        old.parent.mkdir(parents=True)
        old.write_text('#!/bin/sh\necho 3.11.2-0123456789\n')  # what another interpreter's venv answers
        old.chmod(0o755)
        (project / ".venv/lib").mkdir()
        make(project, "venv", f"PYTHON={python}")
        assert not (project / ".venv/lib").exists()
        assert (project / ".venv/made-by").read_text().strip() == str(python)

    def test_a_venv_this_python_made_is_kept_even_without_a_stamp(self, project, tmp_path):
        python = venv_maker(tmp_path / "bin", "python3.13")
        make(project, "venv", f"PYTHON={python}")
        (project / ".venv/lib").mkdir()  # packages installed since
        for stamp in (project / ".venv").glob(".made-by-*"):
            stamp.unlink()  # as in a venv made before make kept stamps
        assert "kept" in make(project, "venv", f"PYTHON={python}")
        assert (project / ".venv/lib").exists()
        assert list((project / ".venv").glob(".made-by-python-3.*"))

    def test_the_venv_is_installed_from_the_hashed_lock_and_again_when_it_changes(self, project, tmp_path):
        python = venv_maker(tmp_path / "bin", "python3.13")
        make(project, "venv", f"PYTHON={python}")
        install = ".venv/bin/python -m pip install --quiet --require-hashes -r requirements-dev.lock"
        commands = dry_run(project, "setup-dev", f"PYTHON={python}")
        assert install in commands
        itself = ".venv/bin/python -m pip install --quiet --no-deps -e ."
        assert commands.index(install) < commands.index(itself)

        for stamp in (".installed", ".installed-dev"):
            (project / ".venv" / stamp).touch()
            os.utime(project / ".venv" / stamp, (2e9, 2e9))
        assert not any("pip install" in c for c in dry_run(project, "setup-dev", f"PYTHON={python}"))

        os.utime(project / "requirements-dev.lock", (2e9 + 60, 2e9 + 60))  # `make lock` or a merge
        assert install in dry_run(project, "setup-dev", f"PYTHON={python}")

    def test_make_lint_runs_ruff_bandit_with_its_config_and_the_audit(self, project):
        commands = dry_run(project, "lint", f"PYTHON={sys.executable}")
        assert any(c.startswith(".venv/bin/ruff check app") for c in commands)
        assert any(c.startswith(".venv/bin/bandit -c bandit.yaml -r app") for c in commands)
        assert ".ci/audit" in commands

    def test_make_lint_checks_the_types_of_app_after_ruff(self, project):
        commands = dry_run(project, "lint", f"PYTHON={sys.executable}")
        ruff = next(i for i, c in enumerate(commands) if c.startswith(".venv/bin/ruff check"))
        assert ".venv/bin/mypy app" in commands[ruff + 1:]

    def test_make_test_runs_the_fast_suite_then_the_browser_journeys_in_a_process_of_their_own(self, project):
        commands = dry_run(project, "test", f"PYTHON={sys.executable}")
        runs = [c for c in commands if c.startswith(".venv/bin/pytest")]
        assert runs == ['.venv/bin/pytest -m "not browser"', ".venv/bin/pytest -m browser"]

    def test_make_lock_writes_both_locks(self, project):
        commands = dry_run(project, "lock", f"PYTHON={sys.executable}")
        assert any(c.startswith(".venv/bin/uv pip compile") and c.endswith("-o requirements.lock")
                   for c in commands)
        assert any("--extra dev" in c and c.endswith("-o requirements-dev.lock") for c in commands)


class TestBandit:
    def test_bandit_has_its_config_in_the_repository(self):
        import yaml

        config = yaml.safe_load((ROOT / "bandit.yaml").read_text())
        # Skipping a check for the whole code base needs a reason in the file, next to it.
        text = (ROOT / "bandit.yaml").read_text()
        for test_id in config.get("skips", []):
            before = text.split(f"- {test_id}", 1)[0].rstrip().splitlines()[-1]
            assert before.lstrip().startswith("#"), f"{test_id} is skipped without a reason above it"

    def test_every_silenced_finding_names_its_check_and_why(self):
        # A bare `# nosec` hides every present and future finding on its line; each one names the
        # check it answers and gives the reason, on the line or in a `# bandit BXXX: …` line above.
        silenced = 0
        for folder in ("app", "migrations"):
            for path in (ROOT / folder).rglob("*.py"):
                lines = path.read_text().splitlines()
                for number, line in enumerate(lines, 1):
                    if "# nosec" not in line:
                        continue
                    silenced += 1
                    where = f"{path.relative_to(ROOT)}:{number}"
                    match = re.search(r"# nosec (B\d{3}(?:, ?B\d{3})*)(?:\s+#\s*(\S.*))?$", line)
                    assert match, f"{where}: write `# nosec BXXX # reason`"
                    above = lines[number - 2].strip() if number > 1 else ""
                    reason = match[2] or re.match(rf"# bandit {match[1]}: \S", above)
                    assert reason, f"{where}: no reason given"
        assert silenced, "no nosec found at all: the scan is broken"


class TestMypy:
    CONFIG = PYPROJECT["tool"]["mypy"]

    def test_mypy_checks_the_oldest_supported_python_strictly(self):
        # Checked as the oldest Python Ahead runs on, so nothing newer than it slips into app/.
        assert self.CONFIG["python_version"] == supported_pythons()[-1]
        assert self.CONFIG["strict"] is True  # untyped defs and calls, implicit Optional, unused ignores...
        assert self.CONFIG["files"] == ["app"]
        assert "plugins" not in self.CONFIG  # SQLAlchemy 2's Mapped[...] needs none

    def test_every_silenced_type_error_names_its_code_and_why(self):
        # A bare `# type: ignore` hides every error on its line, today's and tomorrow's; one is only for a
        # library whose types are wrong, names the error code and says so on the line.
        for path in (ROOT / "app").rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if "type: ignore" in line:
                    assert re.search(r"# type: ignore\[[a-z-]+(, ?[a-z-]+)*\]\s+#\s*\S", line), (
                        f"{path.relative_to(ROOT)}:{number}: write `# type: ignore[code]  # why`")


class TestAudit:
    def audit(self, pip_audit: Path | str, **env: str) -> subprocess.CompletedProcess[str]:
        return run([str(ROOT / ".ci/audit")], ROOT, PIP_AUDIT=str(pip_audit), **env)

    def test_offline_the_audit_says_it_checked_nothing_and_passes(self):
        # A proxy that refuses every connection: no vulnerability service can answer.
        pip_audit = Path(sys.executable).parent / "pip-audit"
        offline = {"HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "",
                   "no_proxy": ""}
        result = self.audit(pip_audit, **offline)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "pip-audit: NOT CHECKED (offline)" in result.stdout
        assert "no known vulnerabilities" not in result.stdout.lower()

    def test_offline_with_audit_required_it_fails(self):
        pip_audit = Path(sys.executable).parent / "pip-audit"
        result = self.audit(pip_audit, HTTPS_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
                            NO_PROXY="", no_proxy="", AUDIT_REQUIRED="1")
        assert result.returncode == 1
        assert "pip-audit: NOT CHECKED (offline)" in result.stdout

    @pytest.fixture
    def online_pip_audit(self, tmp_path) -> Path:
        """Stands in for pip-audit with a service that answers: the canary comes back vulnerable, and
        the lock's audit exits as FAKE_AUDIT_EXIT says, recording its arguments."""
        fake = tmp_path / "pip-audit"
        fake.write_text(f"""#!/bin/sh
echo "$@" >> {tmp_path}/calls
case "$*" in
  *canary*) out=""; while [ $# -gt 0 ]; do [ "$1" = --output ] && out=$2; shift; done
            echo '{{"dependencies": [{{"name": "jinja2", "version": "2.10",' > "$out"
            echo '  "vulns": [{{"id": "PYSEC-2019-217"}}]}}]}}' >> "$out"
            exit 1 ;;
  *) [ "$FAKE_AUDIT_EXIT" = 0 ] || echo "jinja2 2.10 PYSEC-2019-217 2.10.1"; exit "$FAKE_AUDIT_EXIT" ;;
esac
""")
        fake.chmod(0o755)
        return fake

    def test_online_a_clean_lock_passes(self, online_pip_audit):
        result = self.audit(online_pip_audit, FAKE_AUDIT_EXIT="0", AUDIT_REQUIRED="1")
        assert result.returncode == 0
        assert "pip-audit: requirements.lock checked, no known vulnerabilities" in result.stdout
        calls = (online_pip_audit.parent / "calls").read_text().splitlines()
        assert "--requirement requirements.lock --require-hashes" in calls[1] and "--strict" in calls[1]

    def test_online_a_vulnerable_pin_fails(self, online_pip_audit):
        result = self.audit(online_pip_audit, FAKE_AUDIT_EXIT="1", AUDIT_IGNORE="GHSA-xxxx")
        assert result.returncode == 1
        assert "pip-audit: FAILED for requirements.lock" in result.stdout
        assert "--ignore-vuln GHSA-xxxx" in (online_pip_audit.parent / "calls").read_text()


class TestDeliveries:
    def test_ci_runs_lint_then_the_suite_then_postgresql_then_the_oldest_python(self):
        script = (ROOT / ".ci/run").read_text()
        oldest = supported_pythons()[-1]
        steps = ["\nmake lint", "\nmake test", "DATABASE_URL=postgresql://", f"find-python {oldest}"]
        positions = [script.find(step) for step in steps]
        assert -1 not in positions and positions == sorted(positions), dict(zip(steps, positions, strict=True))
        assert "--require-hashes -r requirements-dev.lock" in script

    def test_the_postgresql_pass_runs_the_fast_suite_and_the_browser_journeys_too(self):
        script = (ROOT / ".ci/run").read_text()
        on_postgresql = script.split('step "suite on PostgreSQL"', 1)[1].split("\nstep ", 1)[0]
        assert "export DATABASE_URL=postgresql://" in on_postgresql
        runs = [line for line in on_postgresql.splitlines() if line.startswith(".venv/bin/pytest")]
        assert runs == ['.venv/bin/pytest -m "not browser"', ".venv/bin/pytest -m browser"]

    def test_every_browser_journey_is_marked_so_the_browser_run_selects_it(self):
        """`make test` runs `-m browser` apart: an unmarked journey would run inside the fast suite, next to
        the async tests Playwright's event loop breaks."""
        journeys = sorted((ROOT / "tests" / "browser").glob("test_*.py"))
        assert journeys
        for path in journeys:
            assert "\npytestmark = pytest.mark.browser\n" in path.read_text(), path.name

    def test_the_image_installs_the_hashed_lock_on_the_newest_python_as_a_non_root_user(self):
        dockerfile = (ROOT / "Dockerfile").read_text()
        assert f"FROM python:{supported_pythons()[0]}-slim" in dockerfile
        lock_install = dockerfile.index("pip install --require-hashes -r requirements.lock")
        assert lock_install < dockerfile.index("pip install --no-deps -e .")
        assert "compileall" in dockerfile
        user = re.search(r"^USER (\S+)", dockerfile, re.MULTILINE)
        assert user and user[1] not in ("root", "0")
