"""Language-model detector tables, the Table-3 analogue, claims and the seed table (docs/spec.md §4).

Torch-free: reads the arrays the language-model jobs wrote. Layer b is block b: its MLP
down-projection's eNTK (``mlp_out.b``) against the PCA of its output hidden state
(``hidden_states[b + 1]``); the embedding is layer -1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from entk.analyses.claims import claim_row
from entk.analyses.detectors import DETECTOR_COLUMNS, check_labels, detect, mode_scores, pca_scores, stratified_split

TABLE_COLUMNS = ["method", "module", "role", "layer", *DETECTOR_COLUMNS]
# Test values of the author's notebook (docs/spec.md §4), layer 16 of Gemma-3-270M: (eNTK, PCA).
PAPER_MACRO = {"test_ap": (0.523, 0.409), "test_auroc": (0.827, 0.745)}


def layer_of(module: str) -> int:
    """Block index of ``role.index`` modules (the embedding is -1); module names give their
    ``layers.<b>`` index."""
    role, _, index = module.rpartition(".")
    if role == "embedding":
        return -1
    if role in ("mlp_out", "attn_out"):
        return int(index)
    parts = module.split(".")
    return int(parts[parts.index("layers") + 1]) if "layers" in parts else -1


def _rows(scores: np.ndarray, labels, classes, train, **meta) -> pd.DataFrame:
    table = detect(scores, labels, classes, train)
    return table.assign(**meta)[TABLE_COLUMNS]


def detector_table(
    labels: np.ndarray,
    classes: list[str],
    modes: dict[str, dict[str, np.ndarray]],
    hidden: np.ndarray,
    settings: dict,
) -> pd.DataFrame:
    """Every detector of one model state: eNTK modes of each module (converged and the author's
    Lanczos), PCA of each block's output, random directions in both spaces (the controls).

    labels (N,) class indices; modes {module: {"vectors": (N·C, k), "lanczos_vectors": (N·C, k)}};
    hidden (L + 1, N, C). Rows: ``TABLE_COLUMNS``, one per (method, module, class)."""
    n = len(labels)
    check_labels(labels, n, classes, settings["train_fraction"])
    train = stratified_split(labels, settings["train_fraction"], settings["split_seed"])
    k, r = settings["top_k"], settings["random_directions"]
    parts = []
    for module, arrays in modes.items():
        role, layer = module.rpartition(".")[0] if "." in module else module, layer_of(module)
        role = role if role in ("mlp_out", "attn_out", "embedding") else "module"
        for method, key in (("entk", "vectors"), ("entk_lanczos", "lanczos_vectors")):
            scores = mode_scores(arrays[key][:, :k], n)
            parts.append(_rows(scores, labels, classes, train, method=method, module=module, role=role, layer=layer))
    c = hidden.shape[2]
    rng = np.random.default_rng(settings["split_seed"])
    directions = rng.standard_normal((n * c, r))
    parts.append(
        _rows(
            mode_scores(directions, n),
            labels,
            classes,
            train,
            method="random_entk",
            module="random",
            role="random",
            layer=pd.NA,
        )
    )
    for h in range(hidden.shape[0]):
        meta = {"module": f"hidden.{h}", "role": "hidden", "layer": h - 1}
        parts.append(_rows(pca_scores(hidden[h], k), labels, classes, train, method="pca", **meta))
        projections = (hidden[h] - hidden[h].mean(0)) @ rng.standard_normal((c, r))
        parts.append(_rows(projections, labels, classes, train, method="random_hidden", **meta))
    table = pd.concat(parts, ignore_index=True)
    table["layer"] = table["layer"].astype("Int64")
    return table


def macro(table: pd.DataFrame) -> pd.DataFrame:
    """Macro averages over classes per (state, method, module, layer) of the test metrics."""
    keys = [c for c in ("experiment", "draw", "state", "method", "module", "role", "layer") if c in table]
    metrics = ["test_ap", "test_auroc", "test_precision_at_k", "chance"]
    return table.groupby(keys, dropna=False, sort=False)[metrics].mean().reset_index()


def best_layers(table: pd.DataFrame) -> dict[str, int]:
    """Per method (eNTK of the MLP down-projections, PCA of the block outputs): the block with the
    highest macro test AUROC — the author's "extremize the AUROC across layers"."""
    m = macro(table)
    blocks = m[m["layer"].notna() & (m["layer"] >= 0)]
    entk = blocks[(blocks["method"] == "entk") & (blocks["role"] == "mlp_out")]
    pca = blocks[blocks["method"] == "pca"]
    return {name: int(part.loc[part["test_auroc"].idxmax(), "layer"]) for name, part in (("entk", entk), ("pca", pca))}


def _pick(table: pd.DataFrame, method: str, layer: int) -> pd.DataFrame:
    role = "mlp_out" if method.startswith("entk") else "hidden"
    sel = table[(table["method"] == method) & (table["role"] == role) & (table["layer"] == layer)]
    return sel.set_index("class")


def table3(trained: pd.DataFrame, init: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """The Table-3 analogue: per block and at each method's best layer, per class and macro, test AP
    and AUROC of the eNTK (MLP down-projection) against PCA, with the untrained initialisation's
    eNTK and the random-direction controls beside them."""
    blocks = sorted(int(b) for b in trained.loc[trained["role"] == "mlp_out", "layer"].unique())
    best, best_init = best_layers(trained), best_layers(init)
    rand_entk = trained[trained["method"] == "random_entk"].set_index("class")
    rows = []
    for layer in [*blocks, "best"]:
        e = _pick(trained, "entk", best["entk"] if layer == "best" else layer)
        p = _pick(trained, "pca", best["pca"] if layer == "best" else layer)
        i = _pick(init, "entk", best_init["entk"] if layer == "best" else layer)
        rh = _pick(trained, "random_hidden", best["pca"] if layer == "best" else layer)
        for cls in [*classes, "macro"]:
            get = (lambda f, col, c=cls: f[col].mean()) if cls == "macro" else (lambda f, col, c=cls: f.loc[c, col])
            rows.append(
                {
                    "layer": layer,
                    "class": cls,
                    "entk_layer": best["entk"] if layer == "best" else layer,
                    "pca_layer": best["pca"] if layer == "best" else layer,
                    "entk_ap": get(e, "test_ap"),
                    "pca_ap": get(p, "test_ap"),
                    "entk_auroc": get(e, "test_auroc"),
                    "pca_auroc": get(p, "test_auroc"),
                    "entk_precision_at_k": get(e, "test_precision_at_k"),
                    "pca_precision_at_k": get(p, "test_precision_at_k"),
                    "init_entk_ap": get(i, "test_ap"),
                    "init_entk_auroc": get(i, "test_auroc"),
                    "random_entk_ap": get(rand_entk, "test_ap"),
                    "random_hidden_ap": get(rh, "test_ap"),
                    "chance": get(e, "chance"),
                }
            )
    return pd.DataFrame(rows)


def lanczos_table(overlaps: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """Per module: the top-k subspace overlap of the converged solver and the author's Lanczos, the
    largest relative error of Lanczos's top-k eigenvalues, times and memory."""
    rows = []
    for module, a in overlaps.items():
        k = len(a["values"])
        err = np.abs(a["lanczos_values"][:k] - a["values"]) / np.abs(a["values"][0])
        rows.append(
            {
                "module": module,
                "k": k,
                "overlap": float(a["overlap"]),
                "max_value_error_rel_lambda1": float(err.max()),
                "lambda1": float(a["values"][0]),
                "lambda_k": float(a["values"][-1]),
                "converged_seconds": float(a["seconds"]),
                "lanczos_seconds": float(a["lanczos_seconds"]),
                "peak_rss_mb": float(a["peak_rss_mb"]),
            }
        )
    return pd.DataFrame(rows)


def lm_claims(table: pd.DataFrame, lanczos: pd.DataFrame, classes: list[str]) -> list[dict]:
    """Claims rows of paper §4 from the Table-3 analogue and the Lanczos table (paper's direction,
    its numbers as the reference)."""
    best = table[(table["layer"] == "best")].set_index("class")
    m = best.loc["macro"]
    rows = []
    for metric, col in (("AP", "ap"), ("AUROC", "auroc")):
        e, p = m[f"entk_{col}"], m[f"pca_{col}"]
        ref = PAPER_MACRO[f"test_{col}"]
        rows.append(
            claim_row(
                f"LM: eNTK macro test {metric} > PCA's at the best layer",
                f"eNTK > PCA (paper {ref[0]:.3f} vs {ref[1]:.3f}, Gemma-3-270M layer 16)",
                f"{e:.3f} (block {int(m['entk_layer'])}) vs {p:.3f} (block {int(m['pca_layer'])})",
                e > p,
            )
        )
    per_class = best.loc[list(classes)]
    margin = per_class["entk_ap"] - per_class["chance"]
    worst = margin.idxmin()
    rows.append(
        claim_row(
            "LM: eNTK test AP above chance for every class at the best layer",
            "every class > its prevalence (paper: all 8 above .125)",
            f"lowest {worst} {per_class.loc[worst, 'entk_ap']:.3f} vs chance {per_class.loc[worst, 'chance']:.3f}",
            bool((margin > 0).all()),
        )
    )
    rows.append(
        claim_row(
            "LM: trained eNTK macro test AP > the untrained initialisation's (best layers)",
            "trained > init",
            f"{m['entk_ap']:.3f} vs {m['init_entk_ap']:.3f}",
            m["entk_ap"] > m["init_entk_ap"],
        )
    )
    rows.append(
        claim_row(
            "LM: top-k subspace overlap, converged solver vs the author's 50-step Lanczos (stated, no band)",
            "stated (min over modules; 1 = same subspace)",
            f"min {lanczos['overlap'].min():.3f}, median {lanczos['overlap'].median():.3f} over {len(lanczos)} modules",
            True,
        )
    )
    return rows


def seed_row(table: pd.DataFrame, experiment: str, draw: int) -> dict:
    """One row of the seed table: each method's best layer and macro test AP, and the paired
    difference eNTK − PCA."""
    best = best_layers(table)
    m = macro(table)
    pick = lambda method, role, layer: float(  # noqa: E731
        m.loc[(m["method"] == method) & (m["role"] == role) & (m["layer"] == layer), "test_ap"].iloc[0]
    )
    e, p = pick("entk", "mlp_out", best["entk"]), pick("pca", "hidden", best["pca"])
    return {
        "experiment": experiment,
        "draw": draw,
        "entk_layer": best["entk"],
        "entk_macro_ap": e,
        "pca_layer": best["pca"],
        "pca_macro_ap": p,
        "difference": e - p,
    }
