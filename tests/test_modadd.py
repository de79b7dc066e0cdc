"""Modular-addition analyses and the claims scorecard on planted eigenvectors with known answers."""

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT
from entk.analyses.claims import format_scorecard, modadd_claims, scorecard
from entk.analyses.modadd import best_family_match, cliff1_maps, derivative_peak, grokking_epoch, overlap_curve
from entk.analyses.rotation import fourier_families

P = 13
SIZE = 2 * (P - 1)
BANDS = yaml.safe_load((ROOT / "config.yaml").read_text())["claims"]


def filler(p, rng, n):
    """n orthonormal columns (p², n) orthogonal to the constant and to all four Fourier families."""
    fam = fourier_families(p)
    known, _ = np.linalg.qr(np.hstack([np.ones((p * p, 1)), *fam.values()]))
    x = rng.standard_normal((p * p, n))
    return np.linalg.qr(x - known @ (known.T @ x))[0]


def planted_vectors(p, rng, cliff1=("a", "b"), cliff2=("sum", "diff"), mix=True):
    """Eigenvectors (p², 4(p−1)+2): index 0 constant, cliff 1 and cliff 2 spanned by the families
    (mixed by random rotations within each cliff; None: by no family), then random orthogonal filler."""
    fam = fourier_families(p)
    d = p * p
    blocks = [np.full((d, 1), 1 / p)]
    for names in (cliff1, cliff2):
        block = filler(p, rng, 2 * (p - 1)) if names is None else np.hstack([fam[n] for n in names])
        if mix:
            q, _ = np.linalg.qr(rng.standard_normal((block.shape[1], block.shape[1])))
            block = block @ q
        blocks.append(block)
    blocks.append(rng.standard_normal((d, 1)))
    q, _ = np.linalg.qr(np.hstack(blocks))
    # QR keeps each leading span; flip signs back so the planted columns are unchanged.
    return q * np.sign(np.sum(q * np.hstack(blocks), axis=0))


def cliff_values(p, layer1=False):
    """Full kernel: isolated λ0, cliff 1, cliff 2, tail. Layer 1 holds no cliff 2: a smooth tail."""
    size = 2 * (p - 1)
    if layer1:
        return np.concatenate([[100.0], np.linspace(10, 8, size), np.geomspace(0.5, 0.3, size + 1)])
    return np.concatenate([[100.0], np.linspace(10, 8, size), np.linspace(1, 0.8, size), [0.01]])


def history(grok=85):
    epochs = np.arange(0, 201)
    return pd.DataFrame({"epoch": epochs, "train_acc": 1.0, "test_acc": np.clip((epochs - grok + 50) / 100, 0, 1)})


def test_grokking_epoch_is_first_crossing():
    assert grokking_epoch(history(85), 0.5) == 85
    assert grokking_epoch(history(85), 2.0) is None


def test_overlap_curve_counts_planted_families_and_differentiates():
    rng = np.random.default_rng(0)
    good = planted_vectors(P, rng)
    noise, _ = np.linalg.qr(rng.standard_normal((P * P, good.shape[1])))
    curve = overlap_curve(np.array([0, 10, 20]), np.stack([noise, good, good]), P)
    assert curve["overlap_sum"].iloc[1] == pytest.approx(P - 1, abs=1e-8)
    assert curve["overlap_diff"].iloc[2] == pytest.approx(P - 1, abs=1e-8)
    # A random 24-dim subspace of 169 dims captures about 24·12/169 ≈ 1.7 of 12.
    assert curve["overlap_sum"].iloc[0] < 4
    expected_mid = (curve["overlap_sum"].iloc[2] - curve["overlap_sum"].iloc[0]) / 20
    assert curve["d_sum"].iloc[1] == pytest.approx(expected_mid)
    assert derivative_peak(curve) in (0, 10)


def test_best_family_match_picks_family_and_frequency():
    maps = {"a": np.array([[0.1, 0.95], [0.2, 0.0]]), "b": np.array([[0.3, 0.1], [0.92, 0.2]])}
    best, family, freq = best_family_match(maps)
    assert best.tolist() == [0.92, 0.95] and family.tolist() == [1, 0] and freq.tolist() == [2, 1]


def test_cliff1_rotation_turns_mixed_families_into_single_frequencies():
    maps = cliff1_maps(planted_vectors(P, np.random.default_rng(1)), P)
    raw_best, _, _ = best_family_match({"a": maps["raw_a"], "b": maps["raw_b"]})
    rot_best, fam, freq = best_family_match({"a": maps["rot_a"], "b": maps["rot_b"]})
    assert raw_best.mean() < 0.8
    assert rot_best.min() > 0.99
    for f in (0, 1):
        assert sorted(set(freq[fam == f].tolist())) == list(range(1, (P - 1) // 2 + 1))


def claims_for(vectors_l1, vectors_full, values_l1, values_full, grok=85, peak=80):
    epochs = np.arange(0, 201, 10)
    curve = pd.DataFrame({"epoch": epochs, "d_sum": -np.abs(epochs - peak), "d_diff": 0.0})
    rotated = {f"rot_{k[-1]}": v for k, v in cliff1_maps(vectors_l1, P).items() if k.startswith("rot")}
    return scorecard(
        modadd_claims(P, values_l1, vectors_l1, values_full, vectors_full, history(grok), curve, rotated, BANDS, 0.5)
    )


def test_modadd_claims_pass_on_planted_structure():
    rng = np.random.default_rng(2)
    vecs = planted_vectors(P, rng)
    table = claims_for(vecs, vecs, cliff_values(P, layer1=True), cliff_values(P))
    assert table["pass"].all(), format_scorecard(table)
    assert len(table) == 12


def test_modadd_claims_fail_when_structure_is_missing():
    rng = np.random.default_rng(3)
    swapped = planted_vectors(P, rng, cliff1=("sum", "diff"), cliff2=("a", "b"))
    flat = np.linspace(10, 1, 4 * (P - 1) + 2)
    table = claims_for(swapped, swapped, flat, flat, grok=150, peak=20).set_index("claim")
    failed = set(table.index[~table["pass"]])
    assert "cliff-1 overlap with the a family (of 12)" in failed
    assert "cliff-2 overlap with the a+b family (of 12)" in failed
    assert "grokking epoch (test acc ≥ 50%)" in failed
    assert "sum-overlap derivative peak epoch" in failed
    assert any(c.startswith("cliff 1 size") for c in failed)


def test_modadd_claims_read_each_cliff_from_its_own_kernel():
    # Layer 1 holds cliff 1 only, the full kernel cliff 2 only (the other slot holds no family), and the
    # full kernel's λ_size/λ_size+1 = 2 is no layer-1 gap: a claim read from the other kernel fails.
    rng = np.random.default_rng(4)
    layer1 = planted_vectors(P, rng, cliff2=None)
    full = planted_vectors(P, rng, cliff1=None)
    values_l1 = cliff_values(P, layer1=True)
    values_full = np.concatenate([[100.0], np.linspace(10, 8, SIZE), np.linspace(4, 3.2, SIZE), [0.01]])
    table = claims_for(layer1, full, values_l1, values_full).set_index("claim")
    assert table["pass"].all(), format_scorecard(table.reset_index())
    measured = table["measured"]
    assert measured["cliff 1 size (layer-1 eNTK, after index 0)"] == str(SIZE)
    assert measured["cliff 2 size (full eNTK, after cliff 1)"] == str(SIZE)
    assert float(measured[f"layer-1 gap λ{SIZE}/λ{SIZE + 1}"]) == pytest.approx(8 / 0.5)
    for name in (
        "cliff-1 overlap with the a family",
        "cliff-1 overlap with the b family",
        "cliff-2 overlap with the a+b family",
        "cliff-2 overlap with the a−b family",
    ):
        assert float(measured[f"{name} (of {P - 1})"]) == pytest.approx(P - 1, abs=1e-6), name
    swapped = claims_for(layer1, layer1, values_full, values_l1).set_index("claim")
    failed = set(swapped.index[~swapped["pass"]])
    assert {f"cliff-2 overlap with the a+b family (of {P - 1})", f"layer-1 gap λ{SIZE}/λ{SIZE + 1}"} <= failed
    assert "cliff 1 size (layer-1 eNTK, after index 0)" in failed
    both_full = claims_for(full, full, values_l1, values_full).set_index("claim")
    assert f"cliff-1 overlap with the a family (of {P - 1})" in set(both_full.index[~both_full["pass"]])


@pytest.mark.parametrize(
    "grok, peak, grok_passes, peak_passes",
    [
        (70, 50, True, True),
        (110, 90, True, True),
        (69, 40, False, False),
        (111, 90, False, False),
        (90, 60, True, False),
    ],
)
def test_modadd_claims_at_the_edges_of_their_bands(grok, peak, grok_passes, peak_passes):
    # config: grokking in [70, 110]; the derivative's peak within 20 epochs of it (edges included).
    rng = np.random.default_rng(5)
    vecs = planted_vectors(P, rng)
    table = claims_for(vecs, vecs, cliff_values(P, layer1=True), cliff_values(P), grok=grok, peak=peak)
    table = table.set_index("claim")
    grok_row, peak_row = table.loc["grokking epoch (test acc ≥ 50%)"], table.loc["sum-overlap derivative peak epoch"]
    assert (grok_row["pass"], grok_row["measured"], grok_row["expected"]) == (
        grok_passes,
        str(grok),
        "in [70, 110] (paper ≈ 90)",
    )
    assert (peak_row["pass"], peak_row["measured"], peak_row["expected"]) == (
        peak_passes,
        str(peak),
        "within 20 of grokking",
    )


def test_rotated_atoms_name_the_missing_frequencies():
    # Cliff 1 holds the a and a+b families (no b): every b frequency is missing, the a+b atoms are not clean.
    rng = np.random.default_rng(6)
    vecs = planted_vectors(P, rng)
    fam = fourier_families(P)
    vecs[:, 1 : 1 + SIZE] = np.hstack([fam["a"], fam["sum"]])
    table = claims_for(vecs, vecs, cliff_values(P, layer1=True), cliff_values(P)).set_index("claim")
    a_row = table.loc["rotated cliff-1: every frequency 1..6 in the a-family"]
    b_row = table.loc["rotated cliff-1: every frequency 1..6 in the b-family"]
    assert a_row["pass"] and a_row["measured"] == "none missing" and a_row["expected"] == "none missing"
    assert not b_row["pass"] and b_row["measured"] == "missing [1, 2, 3, 4, 5, 6]"
    share = table.loc["rotated cliff-1 atoms with best correlation ≥ 0.9"]
    assert share["expected"] == "share ≥ 0.9" and not share["pass"] and float(share["measured"]) < 0.9


def test_modadd_claims_count_exactly_each_cliffs_columns():
    # One a-column swapped just past cliff 1 (layer 1) and one a+b column just past cliff 2 (full kernel):
    # each overlap is then 11 of 12, and a slice one column too wide would count 12.
    rng = np.random.default_rng(7)
    layer1 = planted_vectors(P, rng, mix=False)
    layer1[:, [1, 1 + SIZE]] = layer1[:, [1 + SIZE, 1]]
    full = planted_vectors(P, rng, mix=False)
    full[:, [1 + SIZE, 1 + 2 * SIZE]] = full[:, [1 + 2 * SIZE, 1 + SIZE]]
    table = claims_for(layer1, full, cliff_values(P, layer1=True), cliff_values(P)).set_index("claim")
    assert float(table.loc["cliff-1 overlap with the a family (of 12)", "measured"]) == pytest.approx(11)
    assert float(table.loc["cliff-1 overlap with the b family (of 12)", "measured"]) == pytest.approx(12)
    assert float(table.loc["cliff-2 overlap with the a+b family (of 12)", "measured"]) == pytest.approx(11)
    assert float(table.loc["cliff-2 overlap with the a−b family (of 12)", "measured"]) == pytest.approx(12)
    expected = table["expected"]
    assert expected["cliff 1 size (layer-1 eNTK, after index 0)"] == "= 2(p−1) = 24"
    assert expected["cliff 2 size (full eNTK, after cliff 1)"] == "= 2(p−1) = 24"
    assert expected["layer-1 gap λ24/λ25"] == "≥ 5"
    # The band is the paper's share of the family times its size 12: 0.964 · 12 = 11.57 and 0.85 · 12 = 10.20.
    assert expected["cliff-1 overlap with the a family (of 12)"] == "≥ 11.57 (paper 27.9 of 28 at p = 29)"
    assert expected["cliff-1 overlap with the b family (of 12)"] == "≥ 11.57 (paper 27.9 of 28 at p = 29)"
    assert expected["cliff-2 overlap with the a+b family (of 12)"] == "≥ 10.20 (paper 26.47 of 28 at p = 29)"
    assert expected["cliff-2 overlap with the a−b family (of 12)"] == "≥ 10.20 (paper 25.21 of 28 at p = 29)"
    assert not table.loc["cliff-1 overlap with the a family (of 12)", "pass"]
    assert table.loc["cliff-2 overlap with the a+b family (of 12)", "pass"]


def test_modadd_claims_at_exact_band_values():
    # A layer-1 gap of exactly 10 / 2 = 5 (the band) passes; so does a clean share exactly at its band.
    rng = np.random.default_rng(8)
    vecs = planted_vectors(P, rng)
    values_l1 = np.concatenate([[100.0], np.linspace(20, 10, SIZE), np.geomspace(2, 1.2, SIZE + 1)])
    table = claims_for(vecs, vecs, values_l1, cliff_values(P)).set_index("claim")
    assert table.loc["layer-1 gap λ24/λ25", "measured"] == "5" and table.loc["layer-1 gap λ24/λ25", "pass"]
    fam = fourier_families(P)
    vecs[:, 1 : 1 + SIZE] = np.hstack([fam["a"], fam["sum"]])
    share = "rotated cliff-1 atoms with best correlation ≥ 0.9"
    measured = float(claims_for(vecs, vecs, values_l1, cliff_values(P)).set_index("claim").loc[share, "measured"])
    clean = round(measured * SIZE)
    at_band = {**BANDS, "rotated_clean_share_min": clean / SIZE}
    epochs = np.arange(0, 201, 10)
    curve = pd.DataFrame({"epoch": epochs, "d_sum": -np.abs(epochs - 80), "d_diff": 0.0})
    rotated = {f"rot_{k[-1]}": v for k, v in cliff1_maps(vecs, P).items() if k.startswith("rot")}
    rows = modadd_claims(P, values_l1, vecs, cliff_values(P), vecs, history(85), curve, rotated, at_band, 0.5)
    assert scorecard(rows).set_index("claim").loc[share, "pass"]


def test_grokking_is_read_at_the_configured_accuracy():
    rng = np.random.default_rng(9)
    vecs = planted_vectors(P, rng)
    epochs = np.arange(0, 201, 10)
    curve = pd.DataFrame({"epoch": epochs, "d_sum": -np.abs(epochs - 120), "d_diff": 0.0})
    rotated = {f"rot_{k[-1]}": v for k, v in cliff1_maps(vecs, P).items() if k.startswith("rot")}
    values_l1, values_full = cliff_values(P, layer1=True), cliff_values(P)
    rows = modadd_claims(P, values_l1, vecs, values_full, vecs, history(70), curve, rotated, BANDS, 0.9)
    row = scorecard(rows).set_index("claim").loc["grokking epoch (test acc ≥ 90%)"]
    # history(70): test accuracy (epoch − 20) / 100 reaches 0.9 at epoch 110, the band's upper edge.
    assert row["measured"] == "110" and row["pass"]
    assert scorecard(rows).set_index("claim").loc["sum-overlap derivative peak epoch", "pass"]
