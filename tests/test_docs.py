"""The docs say what is true: the README's results table is the report's, no diary wording, a README that stays short."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
REPORT = ROOT / "report" / "report.md"

# What a lab notebook says and a manual does not (the grep: grep -riE "this session|evening|tonight|night").
DIARY = re.compile(r"this session|evening|tonight|night", re.IGNORECASE)
# Vendored third-party files: vega's colour table names "midnightblue".
VENDORED = {ROOT / "docs" / "vega" / "plots.html"}


def _tool():
    spec = importlib.util.spec_from_file_location("readme_results", ROOT / "tools" / "readme_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _docs_files() -> list[Path]:
    """The README, docs/, shipped/README.md and src/: what git tracks or would track (not what it ignores, such
    as an egg-info copy of an older README)."""
    scope = ["README.md", "docs", "shipped/README.md", "src"]
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *scope],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if listed.returncode == 0:
        files = [ROOT / name for name in listed.stdout.splitlines()]
    else:  # not a git checkout (an unpacked archive): every file but caches
        files = [ROOT / "README.md", ROOT / "shipped" / "README.md"]
        files += [path for folder in ("docs", "src") for path in (ROOT / folder).rglob("*")]
        files = [path for path in files if "__pycache__" not in path.parts and ".egg-info" not in str(path)]
    return [path for path in files if path.is_file() and path not in VENDORED]


def test_the_readmes_results_table_is_the_reports():
    if not REPORT.is_file():
        pytest.skip("report/report.md is absent (a DVC output: make run or dvc pull writes it)")
    tool = _tool()
    assert tool.readme_table(README.read_text()) == tool.report_table(REPORT.read_text()), (
        "README.md's results table differs from report/report.md's: run make readme-results"
    )


def test_the_tool_copies_the_first_table_between_the_markers(tmp_path):
    tool = _tool()
    report = "# Results\n\nintro\n\n| agent | score |\n|:--|--:|\n| random | 148.2 |\n\nnote\n\n| other | table |\n"
    readme = f"# README\n\ntext\n\n{tool.BEGIN}\n| old | row |\n{tool.END}\n\nafter\n"
    (tmp_path / "report.md").write_text(report)
    (tmp_path / "README.md").write_text(readme)
    args = ["--report", str(tmp_path / "report.md"), "--readme", str(tmp_path / "README.md")]
    assert tool.main([*args, "--check"]) == 1
    assert tool.main(args) == 0
    written = (tmp_path / "README.md").read_text()
    assert tool.readme_table(written) == "| agent | score |\n|:--|--:|\n| random | 148.2 |"
    assert written.startswith("# README\n\ntext\n\n") and written.endswith(f"{tool.END}\n\nafter\n")
    assert tool.main([*args, "--check"]) == 0
    assert tool.main(["--report", str(tmp_path / "absent.md"), "--readme", str(tmp_path / "README.md")]) == 2


def test_the_readme_has_one_results_block():
    tool = _tool()
    assert tool.readme_table(README.read_text()).startswith("|")


def test_no_diary_wording_in_the_docs():
    found = []
    for path in _docs_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # images, weights
        for number, line in enumerate(text.splitlines(), start=1):
            if DIARY.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not found, "diary wording (say what is true of the code, date only measured figures):\n" + "\n".join(found)


def test_the_readme_stays_short():
    lines = len(README.read_text().splitlines())
    assert lines <= 250, f"README.md has {lines} lines; at most 250 (details go to docs/)"


def test_a_benchmark_writes_what_it_prints_as_a_markdown_table(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench", ROOT / "benchmarks" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    say = bench.Printed()
    say("CPU: AMD EPYC, avx512f | avx512_bf16")
    say("agent steps/s, training end to end:     280.1   (4000 steps)")
    say("  1M agent steps would take:      0.99 h")
    say.write(tmp_path / "out" / "bench.md", "make bench")
    printed = capsys.readouterr().out
    assert "agent steps/s, training end to end:     280.1" in printed
    lines = (tmp_path / "out" / "bench.md").read_text().splitlines()
    assert lines[0] == "# make bench" and lines[2].startswith("Written by `python ")
    assert lines[-4:] == [
        "|---|---|",
        "| CPU | AMD EPYC, avx512f \\| avx512_bf16 |",
        "| agent steps/s, training end to end | 280.1   (4000 steps) |",
        "| 1M agent steps would take | 0.99 h |",
    ]


def test_the_tool_reads_the_table_the_report_stage_writes(tmp_path):
    import numpy as np

    from invaders.reporting.report import AgentScores, results_table, seed_rows, write_report

    agents = [
        AgentScores("random", 0, 0.0, "v5 eps 0.05", "workspace", "4cfda13aaaa", np.array([100.0, 200.0])),
        AgentScores("native 10,000 steps", 10_000, 120.0, "v5 eps 0.05", "workspace", "4cfda13aaaa", np.array([5.0])),
    ]
    rows = seed_rows(agents, {})
    write_report(rows, tmp_path, 0.95, 100, None, None, game="Space Invaders", source="S.")
    tool = _tool()
    table = tool.report_table((tmp_path / "report.md").read_text())
    assert table == results_table(rows, 0.95, 100).to_markdown(index=False)
    assert tool.readme_table(tool.with_table(f"{tool.BEGIN}\n{tool.END}\n", table)) == table
