"""Every ```python block of docs/ and README.md runs, and prints what its comments say.

Conventions: ``print(...)  # text`` must print ``text`` (compared as text, or as a Python
literal); a line ending in ``# raises SomeError`` must raise that error, and the block stops
there. A page's blocks run in order in one namespace, like a reader going down the page.
A block whose first line is ``# needs a running server: python -m lucid.serve`` talks to the
server; ``tests/test_serve_smollm2.py`` runs it against one.
"""
import ast
import builtins
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
EXPECT = re.compile(r"^\s*print\(.*\)\s*#\s*(.+)$")
RAISES = re.compile(r"#\s*raises (\w+)\s*$")
SERVER = "# needs a running server: python -m lucid.serve"


def blocks(page):
    return [code for code in FENCE.findall(page.read_text()) if not code.startswith(SERVER)]


def same(printed: str, expected: str) -> bool:
    if printed == expected:
        return True
    try:
        return ast.literal_eval(printed) == ast.literal_eval(expected)
    except (ValueError, SyntaxError):
        return False


def run_block(code, namespace):
    printed = []
    namespace["print"] = lambda *args, **kw: printed.append(" ".join(map(str, args)))
    lines = code.splitlines()
    raising = [(i, m.group(1)) for i, line in enumerate(lines) if (m := RAISES.search(line))]
    expected = [m.group(1).strip() for line in lines if (m := EXPECT.match(line))]
    if raising:
        line_no, name = raising[0]
        error = getattr(builtins, name)
        with pytest.raises(error) as info:
            exec(compile(code, "<docs>", "exec"), namespace)
        in_block = [entry.lineno + 1 for entry in info.traceback if entry.path == "<docs>"]
        assert in_block[-1] == line_no + 1, f"raised on line {in_block[-1]}, documented on {line_no + 1}"
        expected = [m.group(1).strip() for line in lines[:line_no] if (m := EXPECT.match(line))]
    else:
        exec(compile(code, "<docs>", "exec"), namespace)
    assert len(printed) == len(expected), f"printed {printed}, documented {expected}"
    for got, want in zip(printed, expected):
        assert same(got, want), f"printed {got!r}, documented {want!r}"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_examples(page):
    from lucid.models.hub import DownloadError

    code_blocks = blocks(page)
    namespace = {}
    for code in code_blocks:
        try:
            run_block(code, namespace)
        except DownloadError as error:  # a page about the trained model, on a machine that cannot fetch it
            pytest.skip(f"{page.name} needs SmolLM2, which is not available here: {error}")


def test_the_collector_finds_the_examples():
    assert sum(len(blocks(p)) for p in PAGES) >= 12
