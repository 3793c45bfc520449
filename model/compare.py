"""Compare two evaluation runs (``python -m model.evaluate --json``) object by object, with a
paired bootstrap (DECISIONS 7): is the candidate better than the baseline beyond the noise?

    python -m model.compare runs/eval_model.json runs/eval_grabcut.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from model.evaluate import paired_bootstrap

METRICS = ("miou@1", "miou@3", "miou@5", "noc@85", "noc@90")


def per_image(run: dict[str, Any], set_name: str) -> dict[str, dict[str, float]]:
    return dict(run["metrics"][set_name]["per_image"])


def paired_row(
    ours: dict[str, dict[str, float]], theirs: dict[str, dict[str, float]], metric: str
) -> dict[str, Any]:
    """One metric over the images both runs have (``per_image`` values): both means, the
    paired difference and its 95% interval; ``better`` when the interval excludes zero in
    ours' favour (lower is better for NoC)."""
    keys = sorted(set(ours) & set(theirs))
    a = np.array([ours[k][metric] for k in keys])
    b = np.array([theirs[k][metric] for k in keys])
    diff, low, high = paired_bootstrap(a, b)
    better = high < 0 if metric.startswith("noc") else low > 0
    return {
        "candidate": float(a.mean()),
        "baseline": float(b.mean()),
        "difference": diff,
        "ci95": [low, high],
        "better": bool(better),
    }


def compare(
    candidate: dict[str, Any], baseline: dict[str, Any], metrics: tuple[str, ...] = METRICS
) -> dict[str, Any]:
    """Per set, ``paired_row`` of each metric."""
    report: dict[str, Any] = {}
    for set_name in sorted(set(candidate["metrics"]) & set(baseline["metrics"])):
        ours, theirs = per_image(candidate, set_name), per_image(baseline, set_name)
        rows = {metric: paired_row(ours, theirs, metric) for metric in metrics}
        report[set_name] = {"images": len(set(ours) & set(theirs)), "metrics": rows}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidate", type=Path)
    parser.add_argument("baseline", type=Path)
    parser.add_argument("--json", type=Path, help="write the comparison here")
    args = parser.parse_args()
    report = compare(json.loads(args.candidate.read_text()), json.loads(args.baseline.read_text()))
    for set_name, block in report.items():
        print(f"{set_name} ({block['images']} images): candidate vs baseline")
        for metric, row in block["metrics"].items():
            low, high = row["ci95"]
            verdict = "better" if row["better"] else "not shown better"
            print(
                f"  {metric:7s} {row['candidate']:6.3f} vs {row['baseline']:6.3f}  "
                f"diff {row['difference']:+.3f} [{low:+.3f}, {high:+.3f}]  {verdict}"
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
