"""The import rule, read from the source: `api` and `workers` use `shared` and never each other; `shared` uses
neither, nor the local tools; the API never imports torch."""

import ast

import pytest

from tests.helpers import ROOT


def imports(folder: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        found[str(path.relative_to(ROOT))] = names
    return found


def offenders(folder: str, banned: tuple[str, ...]) -> dict[str, set[str]]:
    bad = {path: {n for n in names if n.startswith(banned) or n in {b.rstrip(".") for b in banned}}
           for path, names in imports(folder).items()}
    return {path: names for path, names in bad.items() if names}


@pytest.mark.parametrize(("folder", "banned"), [
    ("api", ("genfleet.workers", "torch", "diffusers", "genfleet.cli", "genfleet.supervisor", "genfleet.client")),
    ("workers", ("genfleet.api", "genfleet.cli", "genfleet.supervisor", "genfleet.client")),
    ("shared", ("genfleet.api", "genfleet.workers", "genfleet.cli", "genfleet.supervisor", "genfleet.client",
                "genfleet.embedded_redis", "genfleet.bench", "torch")),
])
def test_the_import_rule_holds(folder, banned):
    assert offenders(folder, banned) == {}


def test_nothing_imports_the_old_top_level_names():
    for folder in ("api", "workers", "shared", "genfleet", "tests"):
        for path, names in imports(folder).items():
            assert not {n for n in names if n.split(".")[0] in {"api", "workers", "shared"}}, path


def test_the_rule_would_catch_an_offender(tmp_path, monkeypatch):
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "bad.py").write_text("from genfleet.workers.runner import run_batch\nimport torch\n")
    monkeypatch.setattr(__import__("tests.unit.test_layout", fromlist=["ROOT"]), "ROOT", tmp_path)
    assert offenders("api", ("genfleet.workers", "torch")) == {
        "api/bad.py": {"genfleet.workers.runner", "genfleet.workers.runner.run_batch", "torch"}}
