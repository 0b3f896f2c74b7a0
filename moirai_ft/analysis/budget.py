"""analyze.py's view of budget= (moirai_ft/budget/clock.py): for each budgeted sweep below the path, its
budget, what it spent and which jobs (and optuna trials) it left out, as they stand now: a job a later
run with a larger budget trained is no longer left out."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moirai_ft.analysis.table import rel_path
from moirai_ft.budget.clock import BUDGET, NOT_STARTED, read_budget
from moirai_ft.budget.duration import format_duration
from moirai_ft.sweep.state import sweep_outcomes


@dataclass
class SweepBudget:
    sweep_dir: Path
    budget: str
    budget_s: float
    spent_s: float
    finished: bool  # the sweep ended (else it runs, or was killed: spent counts to its last result)
    left_out: list[str] = field(default_factory=list)  # job directories and optuna trials not started
    trained_since: list[str] = field(default_factory=list)  # of those, jobs a later run (a larger budget) trained

    def to_dict(self, root: Path) -> dict[str, Any]:
        return {"sweep": rel_path(self.sweep_dir, root), "budget": self.budget, "budget_s": self.budget_s,
                "spent_s": round(self.spent_s, 3), "finished": self.finished, "left_out": self.left_out,
                "trained_since": self.trained_since}


def _budget_files(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if BUDGET in filenames:
            found.append(Path(dirpath))
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d / ".hydra").is_dir()]  # job dirs hold none
    return sorted(found)


def sweep_budgets(root: Path) -> list[SweepBudget]:
    out = []
    for sweep_dir in _budget_files(Path(root)):
        record = read_budget(sweep_dir)
        if record is None:
            continue
        outcomes = sweep_outcomes(sweep_dir)
        ended = record.get("ended")
        if ended is None:  # running, or killed: up to its newest result
            stamps = [p.stat().st_mtime for o in outcomes for p in [o.result_dir / "metrics.json"] if p.exists()]
            ended = max(stamps, default=float(record["started"]))
        now = [o.job_dir.name for o in outcomes if o.status == NOT_STARTED]
        left_out = list(dict.fromkeys(list(record.get("not_started") or []) + now))
        left_out += [f"trial {t.get('trial')}: {t.get('overrides')}" for t in record.get("left_out") or []]
        out.append(SweepBudget(sweep_dir, str(record["budget"]), float(record["budget_s"]),
                               float(ended) - float(record["started"]), record.get("ended") is not None, left_out,
                               [n for n in left_out if n not in now and not n.startswith("trial ")]))
    return out


def budget_lines(budgets: list[SweepBudget], root: Path) -> list[str]:
    if not budgets:
        return []
    lines = ["", "Budget (budget=):"]
    for b in budgets:
        state = "" if b.finished else " (not ended: running or killed)"
        since = f" ({len(b.trained_since)} trained since by a later run)" if b.trained_since else ""
        lines.append(f"- {rel_path(b.sweep_dir, root)}: budget={b.budget}, spent {format_duration(b.spent_s)}{state}, "
                     + (f"left out {len(b.left_out)}{since}: " + "; ".join(b.left_out) if b.left_out else "nothing left out"))
    if any(len(b.left_out) > len(b.trained_since) for b in budgets):
        lines.append("    the same command with a larger budget= trains what was left out (finished jobs are skipped)")
    return lines
