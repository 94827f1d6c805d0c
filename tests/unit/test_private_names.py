"""No leading-underscore name of celery, kombu, billiard or celery-batches is used outside the adapter modules.

The libraries' private names are read from their installed sources: every `_name` they define (a function, a
class attribute, `self._name = ...`, a module global). A project module may not read such a name off another
object, nor off `self` in a class that does not define it itself (a subclass of a library class reaching into
its base), nor import one. The adapters (docs/delivery.md) are the one place allowed to."""

import ast
import functools
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.unit

LIBRARIES = ("celery", "kombu", "billiard", "celery_batches")
ADAPTERS = {"shared/kombu_adapter.py", "workers/batches_adapter.py", "workers/billiard_adapter.py"}


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def defined(tree: ast.AST) -> set[str]:
    """The private names a tree defines: functions, classes, assignments to names and to `self.`/`cls.` attributes."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign | ast.AugAssign) else []
        for t in targets:
            if isinstance(t, ast.Name):
                names.add(t.id)
            elif isinstance(t, ast.Attribute):
                names.add(t.attr)
    return {n for n in names if private(n)}


@functools.cache
def library_names() -> frozenset[str]:
    names: set[str] = set()
    for lib in LIBRARIES:
        for path in Path(importlib.import_module(lib).__file__ or "").parent.rglob("*.py"):
            names |= defined(ast.parse(path.read_text(errors="replace")))
    return frozenset(names)


def project_sources() -> Iterator[tuple[str, str]]:
    for folder in ("api", "shared", "workers", "genfleet"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not path.is_symlink() and not any(p.is_symlink() for p in path.parents) and rel not in ADAPTERS:
                yield rel, path.read_text()


Classes = dict[str, tuple[set[str], list[str]]]  # a project class's own private names, and its bases' names


def classes_of(tree: ast.AST) -> Classes:
    return {c.name: (defined(c), [ast.unparse(b).split(".")[-1] for b in c.bases])
            for c in ast.walk(tree) if isinstance(c, ast.ClassDef)}


def inherited(name: str, classes: Classes) -> set[str]:
    """The private names a project class and its project ancestors define (library bases define none here)."""
    names: set[str] = set()
    todo, seen = [name], set()
    while todo:
        if (c := todo.pop()) in seen or c not in classes:
            continue
        seen.add(c)
        names |= classes[c][0]
        todo += classes[c][1]
    return names


def offences(source: str, ours: set[str], classes: Classes, theirs: frozenset[str]) -> list[str]:
    """`line: name` for each library private name `source` uses. `ours`: the private names the project defines;
    `classes`: the project's classes, outside the adapters."""
    tree = ast.parse(source)
    classes = {**classes, **classes_of(tree)}
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
            found += [f"{node.lineno}: {a.name}" for a in node.names if private(a.name)]
    for scope in [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef))]:
        own = inherited(scope.name, classes) if isinstance(scope, ast.ClassDef) else set()
        for node in ast.walk(scope):
            if not (isinstance(node, ast.Attribute) and private(node.attr) and node.attr in theirs):
                continue
            base = node.value
            on_self = (isinstance(base, ast.Name) and base.id in ("self", "cls")) or \
                (isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "super")
            into_base = on_self and isinstance(scope, ast.ClassDef) and node.attr not in own
            into_other = not on_self and scope is tree and node.attr not in ours
            if into_base or into_other:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return sorted(set(found))


def test_the_check_sees_what_the_adapters_hide():
    theirs = library_names()
    assert {"_delivered", "_dirty", "_buffer", "_tref", "_do_flush", "_job", "_cache"} <= theirs
    reaching = ("class T(Batches):\n    def go(self):\n        return self._buffer.qsize(), super()._do_flush()\n"
                "def renew(qos, call):\n    return qos._delivered, call._job in call._cache\n"
                "from kombu.utils.objects import _private\n")
    assert offences(reaching, set(), {}, theirs) == ["3: self._buffer", "3: super()._do_flush", "5: call._cache",
                                                     "5: call._job", "5: qos._delivered", "6: _private"]
    own = ("class W:\n    def __init__(self):\n        self._buffer = []\n"
           "class V(W):\n    def go(self):\n        return self._buffer\n")
    assert offences(own, set(), {}, theirs) == []
    assert offences("class V(W):\n    def go(self):\n        return self._buffer\n", set(), {}, theirs) == \
        ["3: self._buffer"]  # W is no project class here: the name is the library's


def test_no_private_name_of_celery_kombu_billiard_or_celery_batches_outside_the_adapters():
    sources = dict(project_sources())
    assert "workers/batching.py" in sources and "shared/leases.py" in sources
    trees = [ast.parse(s) for s in sources.values()]
    ours = set().union(*(defined(t) for t in trees))
    classes = {name: c for t in trees for name, c in classes_of(t).items()}
    found = {path: bad for path, source in sources.items()
             if (bad := offences(source, ours, classes, library_names()))}
    assert found == {}, f"library internals outside the adapters (docs/delivery.md): {found}"
