"""Checks run before any model is loaded: the columns are usable, a sample fits the model, and every
split has a window. Each failure is a UserError saying what to change."""

from __future__ import annotations

import numpy as np
from jaxtyping import Float, Int
from omegaconf import DictConfig
from torch import Tensor

from moirai_ft.errors import UserError
from moirai_ft.model.families import family_of
from moirai_ft.data.windows import WindowSpec


def _names(names: list[str], limit: int = 5) -> str:
    return ",".join(names[:limit]) + (f",... ({len(names)} columns)" if len(names) > limit else "")


def column_problems(
    values: Float[np.ndarray, "time columns"], columns: list[str], train_rows: int, data_cfg: DictConfig
) -> tuple[list[str], list[str]]:
    """(columns to drop, notes). Columns with no value at all, or none in the train split (no statistics
    to normalise with), are refused unless data.drop_bad_columns; mostly-missing and constant columns are
    reported and dropped only when asked."""
    observed = ~np.isnan(values)
    empty = [c for c, n in zip(columns, observed.sum(axis=0)) if n == 0]
    no_train = [c for c, n in zip(columns, observed[:train_rows].sum(axis=0)) if n == 0 and c not in empty]
    drop = data_cfg.drop_bad_columns
    if empty and not drop:
        raise UserError(
            f"column {empty[0]!r} has no values (all {len(values)} cells missing or non-finite)"
            + (f", and {len(empty) - 1} more columns" if len(empty) > 1 else "")
            + f"; leave it out with data.exclude=[{_names(empty)}] or set data.drop_bad_columns=true"
        )
    if no_train and not drop:
        raise UserError(
            f"column {no_train[0]!r} has no values in the train split (its first {train_rows} rows), so it cannot be "
            f"normalised; leave it out with data.exclude=[{_names(no_train)}], set data.drop_bad_columns=true, "
            "or start the validation split later (data.val_start / data.train_ratio)"
        )
    missing = 1.0 - observed.mean(axis=0)
    sparse = [c for c, m in zip(columns, missing) if m > data_cfg.max_missing and c not in empty and c not in no_train]
    train = values[:train_rows]
    seen = np.isfinite(train).any(axis=0)  # a column without a train value (dropped above) has no spread
    spread = np.full(train.shape[1], np.nan)
    with np.errstate(all="ignore"):
        spread[seen] = np.nanmax(train[:, seen], axis=0) - np.nanmin(train[:, seen], axis=0)
    constant = [c for c, s in zip(columns, spread) if s == 0]
    how = "dropped (data.drop_bad_columns=true)" if drop else "kept (data.drop_bad_columns=true drops them)"
    notes = []
    if sparse:
        notes.append(f"{len(sparse)} columns are more than {data_cfg.max_missing:.0%} missing, {how}: {_names(sparse)}")
    if constant:
        notes.append(f"{len(constant)} columns are constant in the train split, {how}: {_names(constant)}")
    if empty or no_train:
        notes.append(f"{len(empty) + len(no_train)} columns without values dropped: {_names(empty + no_train)}")
    bad = set(empty + no_train + (sparse + constant if drop else []))
    if bad and len(bad) == len(columns):
        raise UserError("every selected column was dropped as empty, mostly missing or constant; select other columns")
    return [c for c in columns if c in bad], notes


def check_model_fits(spec: WindowSpec, num_variates: int, model_cfg: DictConfig) -> None:
    """A sample's tokens within max_seq_len and its variates within max_dim (uni2ts's limits); the patch size
    is one of the model's (validate() checked the config)."""
    tokens = spec.tokens * num_variates
    if tokens > model_cfg.max_seq_len:
        raise UserError(
            f"a sample is {tokens} tokens (ceil({spec.context_length}/{spec.patch_size}) + "
            f"ceil({spec.prediction_length}/{spec.patch_size}) per variate x {num_variates} variates), over the "
            f"model's max_seq_len {model_cfg.max_seq_len}; use a shorter context_length, a larger patch_size"
            + (", data.mode=S or fewer columns" if num_variates > 1 else "")
        )
    if num_variates > model_cfg.max_dim:
        raise UserError(
            f"{num_variates} variates in one sample exceed the model's max_dim {model_cfg.max_dim}; "
            "use data.mode=S or select fewer columns (data.columns / data.exclude)"
        )
    family_of(model_cfg).preflight(spec, num_variates, model_cfg)  # the family's own limits


def check_windows(
    starts: dict[str, Int[Tensor, "n_starts"]], spec: WindowSpec, index_len: int, val_start: int, test_start: int
) -> None:
    """At least one window in each split; the message gives the split's rows against what a window needs."""
    bounds = {"train": (0, val_start), "val": (val_start, test_start), "test": (test_start, index_len)}
    for split, s in starts.items():
        if len(s) == 0:
            first, end = bounds[split]
            raise UserError(
                f"the {split} split (rows {first}-{end - 1} of {index_len}) has no window: a window needs "
                f"prediction_length={spec.prediction_length} rows inside the split and context_length="
                f"{spec.context_length} rows before its forecast start; use a shorter context_length or "
                "prediction_length, other split points (data.train_ratio/val_ratio or data.val_start/test_start), "
                "or more data"
            )


def check_covariates_fit(spec: WindowSpec, targets: int, known: int, past: int, model_cfg: DictConfig) -> None:
    """A sample with covariates within max_seq_len and max_dim. `targets` per sample (1 in mode S). A known
    covariate takes a variate's context and horizon tokens, a past covariate its context tokens only."""
    tokens = (targets + known) * spec.tokens + past * spec.context_tokens
    limit = model_cfg.max_seq_len
    if tokens > limit:
        room = limit - targets * spec.tokens
        fit = (
            f"at context_length={spec.context_length} and patch_size={spec.patch_size}, beside {targets} target "
            f"variate{'s' if targets > 1 else ''} there is room for {room // spec.tokens} known or "
            f"{room // spec.context_tokens} past covariates"
            if room > 0
            else f"the {targets} target variates alone take {targets * spec.tokens} tokens"
        )
        raise UserError(
            f"a sample is {tokens} tokens ({targets} target and {known} known covariate variates x {spec.tokens} "
            f"tokens, {past} past covariates x {spec.context_tokens}), over the model's max_seq_len {limit}; {fit}; "
            "name fewer covariates (data.known_covariates / data.past_covariates), use a shorter context_length "
            "or a larger patch_size" + (", or data.mode=S" if targets > 1 else "")
        )
    variates = targets + known + past
    if variates > model_cfg.max_dim:
        raise UserError(
            f"{variates} variates in one sample exceed the model's max_dim {model_cfg.max_dim}; "
            "name fewer covariates or use data.mode=S"
        )
    family = family_of(model_cfg)
    if (known or past) and not family.supports_covariates:
        raise UserError(
            f"{family.title} is not trained with covariates here; use a Moirai 1.x model or leave "
            "data.known_covariates and data.past_covariates empty"
        )
    family.preflight(spec, variates, model_cfg)  # the family's own limits


def check_known_horizons(
    values: Float[np.ndarray, "time columns"],
    known: list[int],
    columns: list[str],
    test_starts: Int[Tensor, "n_starts"],
    spec: WindowSpec,
    index: object,
) -> None:
    """A known covariate is given over every test window's horizon (the forecast the model is asked with);
    a missing value there means the column is not known ahead."""
    if not known or len(test_starts) == 0:
        return
    rows = test_starts.cpu().numpy()[:, None] + np.arange(spec.prediction_length)  # (windows, pred)
    for j in known:
        missing = np.isnan(values[rows, j])  # (windows, pred)
        bad = missing.any(axis=1)
        if bad.any():
            w = int(np.flatnonzero(bad)[0])
            first = rows[w][missing[w]][0]
            raise UserError(
                f"known covariate {columns[j]!r} is missing over the horizon of {int(bad.sum())} of {len(rows)} test "
                f"windows (first at {index[first]}); a known covariate must be given over every forecast horizon: "
                "fill its forecast in, or move it to data.past_covariates"
            )
