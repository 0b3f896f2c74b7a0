"""analyze on constructed job directories with coverage, calibration and blends (moirai_ft/analysis/blend.py):
coverage_80 beside wql, jobs with a blend ranked by it, and whether the blend beat both its parts."""

from __future__ import annotations

from pathlib import Path

from moirai_ft.analysis.report import advice_lines, analyze, printable
from tests.search.test_search_analyze import make_job


def _blend(wql: float, coverage: float, w: float, vs_ft: list[float], vs_zs: list[float]) -> dict:
    mid = lambda ci: sum(ci) / 2  # noqa: E731
    return {"blend_weight": w, "blend_validation": {"metric": "wql", "scores": {}},
            "test_blend": {"wql": wql, "coverage_80": coverage},
            "blend_rel_improvement": {"vs_fine_tuned": {"wql": mid(vs_ft)}, "vs_zero_shot": {"wql": mid(vs_zs)}},
            "blend_ci": {"vs_fine_tuned": {"wql": vs_ft}, "vs_zero_shot": {"wql": vs_zs}}}


def _sweep(root: Path) -> None:
    zs = {"wql": 0.3, "coverage_80": 0.5, "mae": 1.0}
    make_job(root, "both", lr=1e-3, test={"wql": 0.26, "coverage_80": 0.62, "mae": 0.9}, zero_shot_test=zs,
             **_blend(0.20, 0.6, 0.5, [0.05, 0.15], [0.2, 0.4]))
    make_job(root, "plain", lr=1e-4, test={"wql": 0.21, "coverage_80": 0.79, "mae": 0.8}, zero_shot_test=zs,
             test_calibrated={"wql": 0.2, "coverage_80": 0.81, "mae": 0.8})
    make_job(root, "one", lr=1e-5, test={"wql": 0.22, "coverage_80": 0.95, "mae": 0.85}, zero_shot_test=zs,
             **_blend(0.22, 0.95, 1.0, [0.0, 0.0], [0.2, 0.3]))


def test_a_blend_ranks_its_job_and_is_said_better_than_both_parts_only_when_it_is(tmp_path: Path):
    _sweep(tmp_path)
    report = analyze(tmp_path, "test.wql")
    # by the selected models alone: plain (0.21), one (0.22), both (0.26); the blend of `both` is 0.20
    assert [j.path.name for j in report.jobs] == ["both", "plain", "one"]
    # summary.csv / summary.md (the terminal's table keeps to 120 columns: the blend's value ranks there)
    cols = list(report.frame.columns)
    assert cols.index("test.coverage_80") == cols.index("test.wql") + 1  # read side by side
    row = report.frame.set_index("lr")
    assert row.loc[1e-3, "blend"] == "w=0.5 wql 0.2 (+10.0% vs ft*, +30.0% vs zs*)"
    assert row.loc[1e-4, "blend"] == "" and row.loc[1e-4, "test_calibrated.coverage_80"] == 0.81
    shown = printable(report).splitlines()
    assert shown[1].split() == ["1", "both", "completed", "0.2", "+30.0%"]  # its blend: wql, gain over zero-shot
    text = "\n".join(advice_lines(report))
    assert "jobs with a blend are ranked by test_blend.wql" in text
    assert "lr=0.001: blend w=0.5 on wql: significantly better than both parts" in text
    assert "lr=1e-05: blend w=1 on wql: significantly better than the zero-shot model only" in text
    assert "- tiny: 0.2 (its blend)" in text


def test_coverage_ranks_by_its_distance_to_the_nominal_level(tmp_path: Path):
    _sweep(tmp_path)
    # 0.79 is 0.01 from 0.80, 0.95 is 0.15 over, 0.60 (a blend's) 0.20 under: not the lowest coverage first
    assert [j.path.name for j in analyze(tmp_path, "test.coverage_80").jobs] == ["plain", "one", "both"]
