"""The scorecard's mechanics (entk.analyses.claims): how a row is written, counted and judged at its band's edges."""

import numpy as np
import pandas as pd
import pytest

from entk.analyses.claims import COLUMNS, claim_row, format_scorecard, phase_claims, scorecard

BANDS = {"phase_peak_within": 20}


def test_rows_show_floats_to_four_digits_and_anything_else_as_it_is():
    assert claim_row("c", "≥ 1", 26.4649, True) == {"claim": "c", "expected": "≥ 1", "measured": "26.46", "pass": True}
    assert claim_row("c", "e", 12, 0)["measured"] == "12" and claim_row("c", "e", 12, 0)["pass"] is False
    assert claim_row("c", "e", "none missing", np.bool_(True))["pass"] is True
    assert claim_row("c", "e", None, False)["measured"] == "None"


def test_scorecard_counts_what_passes():
    table = scorecard([claim_row("a", "x", 1.0, True), claim_row("b", "y", 2.0, False)])
    assert list(table.columns) == COLUMNS == ["claim", "expected", "measured", "pass"]
    text = format_scorecard(table)
    assert text.splitlines()[1].split() == ["a", "x", "1", "PASS"]
    assert text.splitlines()[2].split() == ["b", "y", "2", "FAIL"]
    assert text.endswith("\n1 of 2 claims pass")
    assert list(scorecard([]).columns) == COLUMNS  # a run without claims still writes the table's header


def history(grok: int) -> pd.DataFrame:
    epochs = np.arange(0, 201)
    return pd.DataFrame({"epoch": epochs, "test_acc": (epochs >= grok).astype(float)})


def phases(peak: int | None, layer: str = "full", k: int = 57) -> pd.DataFrame:
    steps = np.arange(0, 201, 10)
    table = pd.DataFrame({"step": steps, "layer": layer, "k": k, "peak": steps == peak})
    other = table.assign(layer="layer 1", k=3, peak=steps == 0)  # another layer's peak is not the full one's
    return pd.concat([other, table], ignore_index=True)


@pytest.mark.parametrize(
    "peak, grok, passes",
    [(80, 85, True), (70, 90, True), (110, 90, True), (60, 90, False), (120, 90, False), (None, 90, False)],
)
def test_phase_claim_within_the_band_of_grokking(peak, grok, passes):
    (row,) = phase_claims(phases(peak), history(grok), BANDS, 0.5)
    assert row["pass"] is passes
    assert row["claim"] == "label-free phase detector peak (full eNTK, top-57 eigenspace vs final)"
    assert row["expected"] == "within 20 of grokking"
    assert row["measured"] == ("no transition" if peak is None else str(peak))


def test_phase_claim_without_grokking_or_layer():
    (row,) = phase_claims(phases(80), history(500), BANDS, 0.5)
    assert not row["pass"] and row["measured"] == "80"
    (row,) = phase_claims(phases(80, layer="W_U", k=4), history(85), BANDS, 0.5, layer="W_U")
    assert row["pass"] and row["claim"].startswith("label-free phase detector peak (W_U eNTK, top-4 ")
    (row,) = phase_claims(phases(80), history(85), BANDS, 0.5, layer="absent")
    assert not row["pass"] and row["measured"] == "no transition" and "top-None" in row["claim"]


def test_phase_claim_reads_grokking_at_the_configured_accuracy():
    epochs = np.arange(0, 201)
    history = pd.DataFrame({"epoch": epochs, "test_acc": np.clip((epochs - 40) / 100, 0, 1)})  # 0.5 at 90, 0.9 at 130
    assert phase_claims(phases(90), history, BANDS, 0.5)[0]["pass"]
    assert not phase_claims(phases(90), history, BANDS, 0.9)[0]["pass"]
    assert phase_claims(phases(130), history, BANDS, 0.9)[0]["pass"]
