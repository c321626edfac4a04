"""The house: no import circle, a wheel that installs only our own top-level names, and the
doctests of ``lucid_backends`` (which pytest's module collection would import under the
folder's name, ``backends``, a second copy)."""
import ast
import doctest
import importlib
import pathlib
import pkgutil
import shutil
import subprocess
import sys
import zipfile

import pytest

import lucid_backends

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = {"lucid": ROOT / "lucid", "lucid_backends": ROOT / "backends"}


def _modules() -> dict:
    """Dotted module name -> (path, is_package) for every module of the two packages."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            found[".".join([package] + (parts[:-1] if is_package else parts))] = (path, is_package)
    return found


def import_graph() -> dict:
    """Module -> the modules of ours it imports, at any depth of its code (lazy imports count)."""
    modules = _modules()
    graph = {}
    for name, (path, is_package) in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in modules)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")[: None if is_package else -1]
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module
                for alias in node.names:
                    member = f"{target}.{alias.name}"
                    edges.add(member if member in modules else target)
        graph[name] = {edge for edge in edges if edge in modules and edge != name}
    return graph


def circles(graph: dict) -> list:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                group.append(other)
                if other == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_circle():
    graph = import_graph()
    assert "lucid.nn.cache.persistence" in graph["lucid.nn.cache.base"]  # the graph sees real edges
    assert circles(graph) == []


def test_the_circle_finder_finds_circles():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_backends_know_nothing_of_lucid_and_nn_imports_no_array_library():
    graph = import_graph()
    assert not any(edge.startswith("lucid.") or edge == "lucid"
                   for name, edges in graph.items() if name.startswith("lucid_backends") for edge in edges)
    for path in (ROOT / "lucid" / "nn").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not any(n.split(".")[0] in ("numpy", "cupy") for n in names), f"{path} imports {names}"


def test_a_built_wheel_holds_only_our_top_level_names(tmp_path):
    source = tmp_path / "source"  # a copy: building in the repository would leave a build/ whose stale files
    source.mkdir()                # a later wheel would pick up
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in PACKAGES.values():
        shutil.copytree(folder, source / folder.name, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"lucid", "lucid_backends"}
    expected = {f"{package}/{path.relative_to(folder).as_posix()}"
                for package, folder in PACKAGES.items() for path in folder.rglob("*.py")}
    assert expected <= set(names), f"missing from the wheel: {sorted(expected - set(names))}"


@pytest.mark.parametrize("module", sorted(m.name for m in pkgutil.iter_modules(lucid_backends.__path__)))
def test_backend_doctests(module):
    if module == "_cupy" and lucid_backends.gpu_problem() is not None:
        pytest.skip(f"CuPy's backend module needs a GPU: {lucid_backends.gpu_problem()}")
    result = doctest.testmod(importlib.import_module(f"lucid_backends.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
