"""The user's file (or partitioned Parquet directory) as a DataFrame, every column kept, before any
column is interpreted. What had to be inferred to read it (the CSV's separator and decimal mark, a
Parquet index holding the timestamps) is added to `notes`, so the job's log and normalization.json say so.

European spreadsheet exports write `2024-01-01 00:00;1,5;-0,25`: read with pandas's defaults that is one
column of text. The separator is the candidate that splits the first lines into the same number of
fields (more than one), and the decimal mark is a comma when numbers such as `1,5` fill the fields of a
file not separated by commas. `data.sep` / `data.decimal` override both.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from moirai_ft.errors import UserError, first_line

PARQUET_SUFFIXES = (".parquet", ".pq")
SEPARATORS = (",", ";", "\t", "|")
SNIFF_BYTES = 64 * 1024  # enough lines to count fields in, little enough to read twice
DECIMAL_COMMA = re.compile(r"^\s*[-+]?\d+,\d+(?:[eE][-+]?\d+)?\s*$")
DECIMAL_POINT = re.compile(r"^\s*[-+]?\d+\.\d+(?:[eE][-+]?\d+)?\s*$")


def _sample_lines(path: Path) -> list[str]:
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    lines = head.decode("utf-8", errors="replace").splitlines()
    if len(head) == SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # probably cut mid-line
    return [line for line in lines if line.strip()][:200]


def sniff_separator(lines: list[str]) -> str:
    """The separator giving every sampled line the same number (> 1) of fields; ',' if none does.
    Quoted fields are not parsed here: a quoted comma only makes ',' look inconsistent, and ',' is
    the fallback."""
    best, best_fields = ",", 1
    for sep in SEPARATORS:
        counts = {line.count(sep) for line in lines}
        if len(counts) == 1 and (fields := counts.pop() + 1) > best_fields:
            best, best_fields = sep, fields
    return best


def sniff_decimal(lines: list[str], sep: str) -> str:
    """',' when the sampled cells hold numbers written with a decimal comma and none with a point."""
    if sep == ",":
        return "."
    cells = [cell.strip().strip('"') for line in lines[1:] for cell in line.split(sep)]
    comma = sum(1 for c in cells if DECIMAL_COMMA.match(c))
    point = sum(1 for c in cells if DECIMAL_POINT.match(c))
    return "," if comma > 0 and point == 0 else "."


def _read_csv(path: Path, data_cfg: DictConfig, notes: list[str]) -> pd.DataFrame:
    sep, decimal = data_cfg.get("sep"), data_cfg.get("decimal")
    if sep is None or decimal is None:
        lines = _sample_lines(path)
        inferred = []
        if sep is None:
            sep = sniff_separator(lines)
            if sep != ",":
                inferred.append(f"separator {sep!r} (data.sep)")
        if decimal is None:
            decimal = sniff_decimal(lines, sep)
            if decimal != ".":
                inferred.append(f"decimal mark {decimal!r} (data.decimal)")
        if inferred:
            notes.append("read the CSV with the inferred " + " and ".join(inferred) + "; set them to override")
    if sep == decimal:
        raise UserError(f"data.sep and data.decimal are both {sep!r}; the decimal mark must differ from the separator")
    return pd.read_csv(path, sep=sep, decimal=decimal, low_memory=False)


def timestamps_from_index(raw: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """A Parquet file written from a frame indexed by time keeps the timestamps in its index: they become
    the first column, as does any named index (epoch numbers, say). An unnamed index that holds no
    timestamps (the row numbers of a filtered frame) is dropped."""
    index = raw.index
    if isinstance(index, pd.RangeIndex) or isinstance(index, pd.MultiIndex):
        return raw.reset_index(drop=isinstance(index, pd.RangeIndex))
    if isinstance(index, pd.DatetimeIndex) or index.name is not None:
        timestamps = True
    elif pd.api.types.is_object_dtype(index) or pd.api.types.is_string_dtype(index):
        sample = pd.Series(index[:100]).astype(str)
        timestamps = bool(pd.to_datetime(sample, errors="coerce", format="mixed").notna().all())
    else:
        timestamps = False
    if not timestamps:
        return raw.reset_index(drop=True)
    name = index.name if index.name is not None and index.name not in raw.columns else "timestamp"
    if not isinstance(index, pd.DatetimeIndex):
        notes.append(f"timestamps read from the Parquet file's index ({name!r})")
    return raw.rename_axis(name).reset_index()


def _plain_categories(raw: pd.DataFrame) -> pd.DataFrame:
    """Partition columns of a Parquet dataset arrive as categoricals: back to their plain values."""
    for name in raw.columns:
        if isinstance(raw[name].dtype, pd.CategoricalDtype):
            raw[name] = raw[name].astype(raw[name].cat.categories.dtype)
    return raw


def read_file(data_cfg: DictConfig, notes: list[str]) -> pd.DataFrame:
    """data.path as read, every column kept: a CSV, a Parquet file, or a directory holding a (partitioned)
    Parquet dataset. Timestamps in a Parquet index become the first column."""
    path_value = data_cfg.path
    if not path_value:
        raise UserError("data.path is not set; point data.path at your CSV or Parquet file")
    path = Path(str(path_value)).expanduser()
    if path.is_dir():
        if not any(p.suffix.lower() in PARQUET_SUFFIXES for p in path.rglob("*") if p.is_file()):
            raise UserError(
                f"data.path={path} is a directory without Parquet files; point data.path at a CSV or Parquet "
                "file (a directory is read only as a partitioned Parquet dataset)"
            )
    elif not path.exists():
        raise UserError(f"data.path={path} does not exist; point data.path at your CSV or Parquet file")
    elif path.stat().st_size == 0:
        raise UserError(f"data.path={path} is empty; export the data again or point data.path at another file")
    try:
        if path.is_dir() or path.suffix.lower() in PARQUET_SUFFIXES:
            raw = timestamps_from_index(_plain_categories(pd.read_parquet(path)), notes)
        else:
            raw = _read_csv(path, data_cfg, notes)
    except pd.errors.EmptyDataError:
        raise UserError(f"data.path={path} has no columns; export the data again with a header row") from None
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - pandas/pyarrow raise many types for a damaged or foreign file
        raise UserError(
            f"data.path={path} could not be read ({type(e).__name__}: {first_line(e, 200) or type(e).__name__}); "
            "save it as CSV or Parquet"
        ) from None
    if raw.shape[1] == 0:
        raise UserError(f"data.path={path} has no columns; export the data again with a header row")
    if len(raw) == 0:
        raise UserError(f"data.path={path} has a header but no rows; export the data again")
    raw.columns = [str(c).strip() for c in raw.columns]
    repeated = raw.columns[raw.columns.duplicated()]
    if len(repeated):  # a Parquet file may repeat a name; trimming may make two CSV names one ("a", " a")
        raise UserError(
            f"data.path={path} has {raw.columns.tolist().count(repeated[0])} columns named {repeated[0]!r} (spaces "
            "around names ignored); give each column its own name in the file"
        )
    return raw
