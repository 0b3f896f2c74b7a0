"""Column roles: which columns are forecast and scored (targets), which are inputs known over the forecast
horizon too (known covariates: a weather forecast, an occupancy schedule) and which are seen only up to the
forecast start (past covariates: setpoints, other sensors).

`data.targets`, `data.known_covariates` and `data.past_covariates` take names or globs matched against the
selected columns. No role given: every column is a target, today's S/M behaviour. Covariates given without
targets: every other column is a target. Targets given: columns named in no role are left out.

Torch-free: resolved before any tensor or model exists.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from moirai_ft.errors import UserError, preview

TARGET, KNOWN, PAST = "target", "known_covariate", "past_covariate"
# config key of each role, in the order a sample lays its variates out (uni2ts's MoiraiForecast._convert)
ROLE_KEYS = {TARGET: "targets", KNOWN: "known_covariates", PAST: "past_covariates"}


@dataclass(frozen=True)
class Roles:
    """Column names per role, each list in table order."""

    targets: tuple[str, ...]
    known: tuple[str, ...] = ()
    past: tuple[str, ...] = ()

    @property
    def has_covariates(self) -> bool:
        return bool(self.known or self.past)

    @property
    def columns(self) -> tuple[str, ...]:
        return self.targets + self.known + self.past

    def role_of(self, column: str) -> str:
        return TARGET if column in self.targets else KNOWN if column in self.known else PAST

    def keep(self, columns: Sequence[str]) -> "Roles":
        """The roles restricted to `columns` (after bad columns were dropped); at least one target must stay."""
        kept = set(columns)
        roles = Roles(*(tuple(c for c in names if c in kept) for names in (self.targets, self.known, self.past)))
        if not roles.targets:
            raise UserError(
                f"every target column ({preview(self.targets, 6)}) was dropped as empty, mostly missing or constant; "
                "choose other data.targets or set data.drop_bad_columns=false"
            )
        return roles


def _patterns(data_cfg: DictConfig, key: str) -> list[str]:
    # configs of jobs written before roles existed have no such key: no role
    value = OmegaConf.select(data_cfg, key, default=None)
    return [str(p) for p in (value or [])]


def role_patterns(data_cfg: DictConfig) -> dict[str, list[str]]:
    return {role: _patterns(data_cfg, key) for role, key in ROLE_KEYS.items()}


def resolve_roles(columns: Sequence[str], data_cfg: DictConfig) -> Roles | None:
    """The roles of the table's columns, or None when no role is configured (every column a target, as before).
    A pattern matching no column, or a column matched by two roles, is a UserError."""
    patterns = role_patterns(data_cfg)
    if not any(patterns.values()):
        return None
    matched: dict[str, list[str]] = {}
    for role, pats in patterns.items():
        names: list[str] = []
        for p in pats:
            hits = [c for c in columns if fnmatch.fnmatchcase(c, p)]
            if not hits:
                raise UserError(
                    f"data.{ROLE_KEYS[role]} names {p!r}, which matches no column; the selected columns are "
                    f"{preview(list(columns), 6)} (after data.columns/data.exclude); fix the name or glob"
                )
            names += [c for c in hits if c not in names]
        matched[role] = names
    owner: dict[str, str] = {}
    for role, names in matched.items():
        for c in names:
            if c in owner:
                raise UserError(
                    f"column {c!r} is in both data.{ROLE_KEYS[owner[c]]} and data.{ROLE_KEYS[role]}; "
                    "give each column one role (narrow the glob, or list it in one role only)"
                )
            owner[c] = role
    if not matched[TARGET]:  # covariates only: every other column is forecast
        matched[TARGET] = [c for c in columns if c not in owner]
        if not matched[TARGET]:
            raise UserError("every column is a covariate; name the columns to forecast with data.targets=[...]")
    in_order = lambda names: tuple(c for c in columns if c in set(names))  # noqa: E731
    return Roles(in_order(matched[TARGET]), in_order(matched[KNOWN]), in_order(matched[PAST]))
