"""`make readme-results`: copy the report's results table into the README, between its marker comments.

The report stage writes report/report.md (src/invaders/reporting/report.py); its first Markdown table is the
results table. The README holds a copy of it between ``<!-- results:begin -->`` and ``<!-- results:end -->``,
so its figures come from the report, never from a keyboard. ``--check`` rewrites nothing and exits 1 when
the README's copy differs (tests/test_docs.py runs the same comparison).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"


class DocsError(Exception):
    """A missing file or marker: one line for the user."""


def report_table(report: str) -> str:
    """The first Markdown table of the report (its consecutive lines starting with ``|``)."""
    lines: list[str] = []
    for line in report.splitlines():
        if line.startswith("|"):
            lines.append(line.rstrip())
        elif lines:
            break
    if not lines:
        raise DocsError("the report holds no Markdown table")
    return "\n".join(lines)


def _bounds(readme: str) -> tuple[int, int]:
    begin, end = readme.find(BEGIN), readme.find(END)
    if begin < 0 or end < begin or readme.count(BEGIN) != 1 or readme.count(END) != 1:
        raise DocsError(f"the README needs one {BEGIN} followed by one {END}")
    return begin + len(BEGIN), end


def readme_table(readme: str) -> str:
    """The table between the README's markers."""
    start, stop = _bounds(readme)
    return readme[start:stop].strip()


def with_table(readme: str, table: str) -> str:
    """The README with the block between its markers replaced by ``table``."""
    start, stop = _bounds(readme)
    return f"{readme[:start]}\n{table}\n{readme[stop:]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=ROOT / "report" / "report.md")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if the README's table differs; write nothing")
    args = parser.parse_args(argv)
    try:
        if not args.report.is_file():
            raise DocsError(f"{args.report}: no report; run the pipeline first (make run, or dvc pull)")
        table = report_table(args.report.read_text())
        readme = args.readme.read_text()
        if args.check:
            if readme_table(readme) != table:
                print(f"readme-results: {args.readme}'s results table differs from {args.report}'s", file=sys.stderr)
                return 1
            return 0
        updated = with_table(readme, table)
    except DocsError as error:
        print(f"readme-results: error: {error}", file=sys.stderr)
        return 2
    if updated != readme:
        args.readme.write_text(updated)
        print(f"readme-results: {args.readme}: results table copied from {args.report}")
    else:
        print(f"readme-results: {args.readme}: already matches {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
