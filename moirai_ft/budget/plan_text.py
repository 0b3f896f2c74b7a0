"""What `plan=true` prints (plan.py computes it): one line per job, the sweep's total, its range with a
pruner, and what fits in a budget. Torch-free."""

from __future__ import annotations

from typing import TYPE_CHECKING

from moirai_ft.budget.duration import format_duration

if TYPE_CHECKING:
    from moirai_ft.budget.plan import JobPlan, SweepPlan


def job_line(j: JobPlan) -> str:
    if j.error is not None:
        return f"{j.num:>3}  {j.name}  would fail: {j.error}"
    w = j.windows
    return (f"{j.num:>3}  {j.name}  windows train {w['train']:,} val {w['val']:,} test {w['test']:,}  "
            f"steps {j.total_steps:,} ({j.epochs} x {j.steps_per_epoch:,})  checks {len(j.check_steps)}  "
            f"est. {format_duration(j.estimate_s)}")


def lines(plan: SweepPlan, budget_s: float | None = None, budget: str | None = None) -> list[str]:
    """The plan as printed: one line per job (per setting of an optuna search), then the total."""
    head = {"single": "the job", "grid": f"{len(plan.jobs)} jobs in the grid's order",
            "optuna": f"an optuna search of {plan.n_trials} trials; its settings at the ends of the space"}[plan.kind]
    calibrated = "; ".join(f"{c.label} on {c.device}: step {format_duration(c.step_s)}, "
                           f"test batch {format_duration(c.test_batch_s)}" for c in plan.calibrations)
    out = [f"plan: {head}", f"calibrated in {format_duration(plan.calibration_s)}: {calibrated or 'nothing to run'}"]
    out += [job_line(j) for j in plan.jobs]
    runnable = plan.runnable
    steps = sum(j.total_steps for j in runnable)
    checks = sum(len(j.check_steps) for j in runnable)
    together = f", {plan.at_a_time} at a time" if plan.at_a_time > 1 else ""
    startup = f"start-up {format_duration(plan.startup_s)}" + (" per job" if plan.process_per_job else "")
    if plan.kind == "optuna":
        out.append(f"total: {plan.n_trials} trials{together}: {format_duration(plan.total(low=True))} to "
                   f"{format_duration(plan.total())} ({startup}; the settings' cheapest and dearest)")
    else:
        failing = len(plan.jobs) - len(runnable)
        out.append(f"total: {len(runnable)} jobs{together}, {steps:,} steps, {checks:,} checks: est. "
                   f"{format_duration(plan.total())} ({startup})" + (f"; {failing} would fail" if failing else ""))
    if plan.prune != "none":
        out.append(f"with prune={plan.prune}: expected {format_duration(plan.total(low=True))} to "
                   f"{format_duration(plan.total())} (every rung keeping its share .. no job pruned)")
    if budget_s is not None:
        out.append(budget_line(plan, budget_s, budget))
    return out


def fitting(plan: SweepPlan, budget_s: float) -> int:
    """How many of the grid's jobs, started in order, the plan says end inside the budget."""
    return next((n for n, end in enumerate(plan.batch_ends()) if end > budget_s), len(plan.runnable))


def budget_line(plan: SweepPlan, budget_s: float, budget: str | None) -> str:
    name = f"budget={budget}" if budget else f"a budget of {format_duration(budget_s)}"
    if plan.kind == "optuna":
        dearest = max((j.estimate_s for j in plan.runnable), default=0.0)
        return (f"{name}: a trial starts only while the plan says it can finish (each takes up to "
                f"{format_duration(dearest)})")
    n = fitting(plan, budget_s)
    if n == len(plan.runnable):
        return f"{name}: every job fits (est. {format_duration(plan.total())})"
    return f"{name}: the first {n} jobs fit; {len(plan.runnable) - n} would be left out (not started: budget)"
