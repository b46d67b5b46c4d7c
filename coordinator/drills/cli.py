"""`bot-coordinator drill SCENARIO... | --all | --list`: rehearse the runbook's incidents.

Each drill runs in a throwaway world (coordinator/drills/scenario.py) and prints its detect,
respond and recover times against its objective; the drills' incident records are exported as
Markdown with a `summary.json` into `--report-dir` (./data/drills/<UTC time>/). Exit 0 when
every drill passed, 1 when one failed or missed its objective, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from coordinator.drills.scenario import DrillResult, Scenario, run_scenario
from coordinator.drills.scenarios import BY_NAME, SCENARIOS

EXIT_PASSED: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2


def add_drill_command(subparsers: Any) -> None:
    drill = subparsers.add_parser(
        "drill", help="rehearse a runbook scenario on a throwaway coordinator, timed"
    )
    drill.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="see --list")
    drill.add_argument("--all", dest="drill_all", action="store_true", help="every scenario")
    drill.add_argument("--list", dest="drill_list", action="store_true", help="list them")
    drill.add_argument("--keep", action="store_true", help="keep each drill's directory")
    drill.add_argument(
        "--report-dir", type=Path, help="where the records go (./data/drills/<UTC time>/)"
    )
    drill.add_argument("--json", dest="drill_json", action="store_true", help="JSON results")


def run_drill_command(args: argparse.Namespace) -> int:
    if args.drill_list:
        for scenario in SCENARIOS:
            print(f"{scenario.name:<24} {scenario.runbook:<16} {scenario.title}")
        return EXIT_PASSED
    chosen = _chosen(args)
    if isinstance(chosen, str):
        print(f"drill: {chosen}", file=sys.stderr)
        return EXIT_USAGE
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    report_dir = (args.report_dir or args.data_dir / "drills" / stamp).resolve()
    results = []
    for scenario in chosen:
        print(f"drill {scenario.name}: {scenario.title} (runbook {scenario.runbook}) ...",
              flush=True)  # fmt: skip
        result = run_scenario(scenario, report_dir, keep=args.keep)
        _say_result(result)
        results.append(result)
    _write_summary(report_dir, results)
    if args.drill_json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(render_table(results))
        print(f"records and summary: {report_dir}")
    return EXIT_PASSED if all(r.passed for r in results) else EXIT_FAILED


def _chosen(args: argparse.Namespace) -> list[Scenario] | str:
    if args.drill_all == bool(args.scenarios):
        return "name the scenarios to run, or --all (--list shows them)"
    if args.drill_all:
        return list(SCENARIOS)
    unknown = [name for name in args.scenarios if name not in BY_NAME]
    if unknown:
        return f"no scenario named {', '.join(map(repr, unknown))}; known: {', '.join(BY_NAME)}"
    return [BY_NAME[name] for name in dict.fromkeys(args.scenarios)]


def _say_result(result: DrillResult) -> None:
    for step in result.steps:
        print(f"    {step}")
    if result.passed:
        print(f"  PASSED in {result.wall_seconds:.1f} s")
    else:
        print(f"  FAILED: {result.failure}")
        if result.kept is not None:
            print(f"  its directory is kept for a look: {result.kept}")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def render_table(results: list[DrillResult]) -> str:
    header = ("scenario", "runbook", "detect", "respond", "recover", "objective", "result")
    rows = [
        (
            r.scenario.name, r.scenario.runbook, _seconds(r.detect), _seconds(r.respond),
            _seconds(r.recover), f"< {r.scenario.objective_seconds // 60} min",
            "PASS" if r.passed else "FAIL",
        )
        for r in results
    ]  # fmt: skip
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
             for row in (header, *rows)]  # fmt: skip
    passed = sum(r.passed for r in results)
    lines.append(f"{passed} of {len(results)} drills passed")
    return "\n".join(lines)


def _write_summary(report_dir: Path, results: list[DrillResult]) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    summary = report_dir / "summary.json"
    partial = summary.with_suffix(".json.partial")
    partial.write_text(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
    partial.replace(summary)
