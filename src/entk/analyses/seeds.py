"""Claims over seeds (docs/spec.md, "Seeds"): the claims tables of one run per seed → one table with
the value at each seed, how many seeds pass, and the median and range; and the scorecard's seed
column. Plain pandas, no torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from entk.analyses.modadd import grokking_epoch

# The author's stored curves (docs/spec.md §3): first epoch with test accuracy ≥ 95 %, by seed.
AUTHOR_GROK_95 = {0: 3480, 2: 1600}

# A measured value that starts with a number ("0.991", "-40 (peak 1560, grok 1600)", "42 at β=1 (…)").
_LEADING_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?=\s|$)")


def leading_number(measured: str) -> float:
    """The number a measured value starts with, NaN when it does not start with one."""
    hit = _LEADING_NUMBER.match(str(measured))
    return float(hit.group(1)) if hit else float("nan")


def with_seed_column(tables: Sequence[pd.DataFrame], seeds: Sequence[str]) -> pd.DataFrame:
    """Claims tables (claim, expected, measured, pass) stacked, each row with the seed(s) of its table."""
    if len(tables) != len(seeds):
        raise ValueError(f"{len(tables)} claims tables for {len(seeds)} seed labels")
    return pd.concat([t.assign(seed=str(s)) for t, s in zip(tables, seeds, strict=True)], ignore_index=True)


def _keyed(table: pd.DataFrame) -> pd.DataFrame:
    """The table indexed by (claim, n-th occurrence of that claim), so repeated labels stay apart."""
    return table.assign(occurrence=table.groupby("claim").cumcount()).set_index(["claim", "occurrence"])


def seed_table(tables: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """Claims tables {seed: (claim, expected, measured, pass)} → one row per claim.

    Columns: claim, expected, ``seed <s>`` (the measured value at each seed, "—" where that seed's
    table lacks the row), passing (seeds that pass), seeds (how many), failing (their seeds), median,
    min and max of the values that are numbers (``leading_number``; NaN when none is).
    """
    if not tables:
        raise ValueError("no claims tables: give one per seed")
    keyed = {s: _keyed(t) for s, t in sorted(tables.items())}
    order = list(dict.fromkeys(k for t in keyed.values() for k in t.index))
    rows = []
    for key in order:
        present = {s: t.loc[key] for s, t in keyed.items() if key in t.index}
        row = {"claim": key[0], "expected": next(iter(present.values()))["expected"]}
        row.update({f"seed {s}": present[s]["measured"] if s in present else "—" for s in keyed})
        passed = [s for s in keyed if s in present and bool(present[s]["pass"])]
        numbers = np.array([leading_number(r["measured"]) for r in present.values()])
        numbers = numbers[~np.isnan(numbers)]
        row.update(
            passing=len(passed),
            seeds=len(keyed),
            failing=" ".join(str(s) for s in keyed if s not in passed),
            median=float(np.median(numbers)) if len(numbers) else np.nan,
            min=float(numbers.min()) if len(numbers) else np.nan,
            max=float(numbers.max()) if len(numbers) else np.nan,
        )
        rows.append(row)
    return pd.DataFrame(rows)


def format_seed_table(table: pd.DataFrame) -> str:
    """A plain-text summary: per claim, seeds passing, median and range, and a closing count."""
    shown = table[["claim", "passing", "seeds", "failing", "median", "min", "max"]].fillna({"failing": ""})
    held = int((table["passing"] == table["seeds"]).sum())
    return f"{shown.to_string(index=False)}\n{held} of {len(table)} claims hold at every seed"


def grokking_epochs(history: pd.DataFrame, thresholds: Sequence[float] = (0.5, 0.95, 1.0)) -> dict[float, int | None]:
    """First logged epoch with test accuracy ≥ each threshold (None where never)."""
    return {t: grokking_epoch(history, t) for t in thresholds}
