"""``benchmarks/run_all.py`` reruns every command whose figures the docs quote: none left out."""
import importlib.util
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: Commands the docs show that produce no quoted figure.
NOT_FIGURES = {"asv run --skip-existing-commits HEAD~10..HEAD", "python -m lucid.demo --model DIR",
               "python -m lucid.demo --prefix-store redis://127.0.0.1:6379", "python benchmarks/run_all.py",
               "asv run --python=same -a rounds=1 --bench 'bench_cache|bench_family'"}  # the GPU's, not yet run


def run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quoted_commands() -> set:
    """``python benchmarks/...``, ``python -m lucid.demo...`` and ``asv run ...`` as the docs
    show them, in code blocks (continued lines joined, and after ``cd asv_bench &&``) and inline."""
    found = set()
    for page in (ROOT / "docs").rglob("*.md"):
        text = page.read_text().replace("\\\n", " ")
        text = re.sub(r"`[^`]*`", lambda code: code.group(0).replace("\n", " "), text)  # inline code over two lines
        for match in re.finditer(r"(?:^|`|&& )((?:[A-Z_]+=\S+ )*(?:python benchmarks/|python -m lucid\.demo|asv run )"
                                 r"[^`\n#]*)", text, re.MULTILINE):
            found.add(" ".join(match.group(1).split()))
    return found - NOT_FIGURES


def test_every_quoted_command_is_in_run_all():
    commands = [" ".join(command.split()) for _, command in run_all().COMMANDS.values()]
    quoted = quoted_commands()
    assert len(quoted) >= 15  # the parse finds the docs' commands at all
    missing = [c for c in quoted if not any(command.startswith(c) for command in commands)]
    assert not missing, f"quoted in docs/ but not rerun by benchmarks/run_all.py: {missing}"


def test_run_all_lists_its_commands(capsys):
    assert run_all().main(["--list"]) == 0
    assert "quantized_step" in capsys.readouterr().out
