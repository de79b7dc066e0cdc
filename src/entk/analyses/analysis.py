"""Generic analyses of eigen files: no feature families needed (numpy/pandas/scipy only, no torch).

An eigen file (``results/{experiment}/{view}/eigen.npz``) holds, for T checkpoints and each layer
group, the top-k eigenpairs of that group's eNTK: values (T, k), unit vectors (T, D, k) with
D = N (``diag_mean``/``all_mean``) or C·N (``flatten``, class-major rows c·N + n).

Every overlap here is a squared projection between orthonormal bases, normalised to [0, 1]:
for Q (D, k) and U (D, m), ‖Qᵀ U‖²_F / min(k, m) is 1 when the smaller space lies inside the
larger one and 0 when they are orthogonal (a random pair in D dimensions gives about max(k, m) / D).

- ``localisation_table``: how much of the full kernel's top-k eigenspace each layer's own top-k
  eigenspace carries — which layer "holds" the full kernel's leading features.
- ``phase_table`` / ``phase_peak``: label-free phase detection. Each layer's top-k eigenspace is
  compared with the next checkpoint's and with the final one's; the step at which it moves
  fastest towards its final form (peak of d overlap_final / d step, central differences as for
  the paper's family overlap) marks a transition such as grokking — without knowing the features.
  On the p = 29 MLP (docs/spec.md §2; 51 checkpoints, every 10 epochs) the full kernel's top-113
  eigenspace (its deepest final cliff) peaks at epoch 70, layer 1's and layer 2's at 90 and 80 at
  the same k; test accuracy crosses 50 % at epoch 85. Layer 1's own top-57 eigenspace (the a, b
  families) stays put from initialisation on (overlap with the final ≥ 0.997): no transition.
- ``feature_overlap_table``: when the user does have candidate features, how much of each
  feature (and of the family's span) lies in each cliff's eigenspace.

Cliffs come from one rule, ``entk.analyses.spectrum.find_cliffs`` (a list of Cliff(position, ratio,
score), position = number of eigenvalues before the gap); every function that needs cliffs
takes ``find_cliffs=`` to replace it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from entk.shared import load_npz, save_npz

CliffRule = Callable[[np.ndarray], Sequence]
PHASE_SIGNAL = "d_overlap_final"
# A transition needs the top-k eigenspace to move by at least this share of its dimension over the
# run; below it the derivative's peak would locate noise (e.g. a layer whose eigenspace is fixed
# by the inputs from initialisation on).
MIN_PHASE_CHANGE = 0.05


@dataclasses.dataclass(frozen=True)
class EigenFile:
    """One experiment × view: top-k eNTK eigenpairs per layer group at T checkpoints.

    steps (T,); groups in config order; values[g] (T, k) descending; vectors[g] (T, D, k) unit
    columns; params[g] the group's parameter names; inputs (N, ...); outputs the output mode;
    n_outputs C; n_samples N (D = C·N for ``flatten``, else N); weights the model's parameters at
    the last checkpoint, by name (what the claims read besides the eigenpairs).

    The eigen job writes it (``save``) and every reader reads it (``load_eigen``): one layout.
    """

    steps: np.ndarray
    groups: list[str]
    values: dict[str, np.ndarray]
    vectors: dict[str, np.ndarray]
    params: dict[str, list[str]]
    inputs: np.ndarray
    outputs: str
    n_outputs: int
    n_samples: int
    weights: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        """The file's arrays by key, in the order they are written."""
        out = {
            "steps": np.asarray(self.steps, dtype=np.int64),
            "groups": np.asarray(list(self.groups)),
            "inputs": self.inputs,
            "outputs": np.asarray(self.outputs),
            "n_outputs": np.asarray(self.n_outputs),
            "n_samples": np.asarray(self.n_samples),
        }
        for g in self.groups:
            out[f"values/{g}"] = self.values[g]
            out[f"vectors/{g}"] = self.vectors[g]
            out[f"params/{g}"] = np.asarray(self.params[g])
        out.update({f"weights/{name}": w for name, w in self.weights.items()})
        return out

    def save(self, path: str | Path) -> None:
        """Write the eigen file all-or-nothing (``load_eigen`` reads it back)."""
        save_npz(path, **self.arrays())

    def index(self, step: int) -> int:
        """Position in ``steps`` of a checkpoint given as a step, or as a Python index when negative."""
        if step < 0:
            if -step > len(self.steps):
                raise IndexError(f"checkpoint index {step} out of range for {len(self.steps)} checkpoints")
            return len(self.steps) + step
        hit = np.flatnonzero(self.steps == step)
        if hit.size == 0:
            raise KeyError(f"no checkpoint at step {step}; steps are {self.steps.tolist()}")
        return int(hit[0])


def load_eigen(path: str | Path) -> EigenFile:
    """Read and check an eigen file; ValueError naming the file and the first missing or inconsistent key."""
    path = Path(path)
    data = load_npz(path, what="eigen file")  # a truncated or corrupt file is named, with the fix

    def need(key: str) -> np.ndarray:
        if key not in data:
            raise ValueError(f"{path}: not a whole eigen file: missing key {key!r} (has {sorted(data)})")
        return data[key]

    def bad(key: str, why: str) -> ValueError:
        return ValueError(f"{path}: key {key!r} {why}")

    steps = need("steps")
    groups = [str(g) for g in need("groups").ravel()]
    outputs, n_outputs, n_samples = str(need("outputs")), int(need("n_outputs")), int(need("n_samples"))
    inputs = need("inputs")
    if steps.ndim != 1 or steps.size == 0 or not np.issubdtype(steps.dtype, np.integer):
        raise bad("steps", f"must be a non-empty 1-D integer array, got {steps.dtype} {steps.shape}")
    if np.any(np.diff(steps) <= 0):
        raise bad("steps", f"must be strictly ascending, got {steps.tolist()}")
    if not groups or len(set(groups)) != len(groups):
        raise bad("groups", f"must name at least one group, each once, got {groups}")
    if inputs.shape[:1] != (n_samples,):
        raise bad("inputs", f"has shape {inputs.shape} but n_samples is {n_samples}")
    dim = n_outputs * n_samples if outputs == "flatten" else n_samples
    values, vectors, params = {}, {}, {}
    for g in groups:
        lam, vec = need(f"values/{g}"), need(f"vectors/{g}")
        params[g] = [str(p) for p in need(f"params/{g}").ravel()]
        if lam.ndim != 2 or lam.shape[0] != steps.size:
            raise bad(f"values/{g}", f"has shape {lam.shape}, expected (T, k) with T = {steps.size}")
        if vec.shape != (steps.size, dim, lam.shape[1]):
            raise bad(
                f"vectors/{g}",
                f"has shape {vec.shape}, expected (T, D, k) = {(steps.size, dim, lam.shape[1])} "
                f"(D = {dim} for outputs {outputs!r}, C = {n_outputs}, N = {n_samples})",
            )
        values[g], vectors[g] = lam.astype(float), vec.astype(float)
    weights = {key.removeprefix("weights/"): a for key, a in data.items() if key.startswith("weights/")}
    return EigenFile(
        steps.astype(np.int64), groups, values, vectors, params, inputs, outputs, n_outputs, n_samples, weights
    )


def _cliff_rule(find_cliffs: CliffRule | None) -> CliffRule:
    """The cliff detector: the caller's, else entk.analyses.spectrum.find_cliffs (the one place it is named).

    A spectrum of zeros (a group whose parameters do not change the outputs, e.g. an unused module)
    has no cliffs: it is reported as such while the other groups go on."""
    if find_cliffs is None:
        from entk.analyses.spectrum import find_cliffs
    rule = find_cliffs
    return lambda values: [] if not np.any(values) else rule(values)


def spectra_table(eig: EigenFile, experiment: str, view: str) -> pd.DataFrame:
    """Tidy spectra: one row per (step, layer, index) with index 1-based and the eigenvalue."""
    frames = []
    for g in eig.groups:
        lam = eig.values[g]
        t, k = lam.shape
        frames.append(
            pd.DataFrame(
                {
                    "step": np.repeat(eig.steps, k),
                    "layer": g,
                    "index": np.tile(np.arange(1, k + 1), t),
                    "eigenvalue": lam.ravel(),
                }
            )
        )
    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "view", view)
    out.insert(0, "experiment", experiment)
    return out


def cliffs_table(
    eig: EigenFile, experiment: str = "", view: str = "", find_cliffs: CliffRule | None = None
) -> pd.DataFrame:
    """Cliffs of every spectrum: one row per (step, layer, cliff) with cliff numbered from 1 by position.

    Columns: experiment, view, step, layer, cliff, position (eigenvalues before the gap), first
    (1-based index of the cliff's first eigenvalue: one after the previous cliff), ratio
    λ_position / λ_position+1, score (the rule's). A spectrum without cliffs has no rows.
    """
    rule = _cliff_rule(find_cliffs)
    rows = []
    for g in eig.groups:
        for step, lam in zip(eig.steps, eig.values[g], strict=False):
            previous = 0
            for n, c in enumerate(sorted(rule(lam), key=lambda c: c.position), start=1):
                rows.append((experiment, view, int(step), g, n, int(c.position), previous + 1, c.ratio, c.score))
                previous = int(c.position)
    columns = ["experiment", "view", "step", "layer", "cliff", "position", "first", "ratio", "score"]
    return pd.DataFrame(rows, columns=columns).astype({"ratio": float, "score": float})


def normalised_overlap(q: np.ndarray, u: np.ndarray) -> float:
    """‖Qᵀ U‖²_F / min(k, m) for orthonormal Q (D, k), U (D, m): 1 if one space contains the other, 0 if orthogonal."""
    m = min(q.shape[1], u.shape[1])
    if m == 0:
        return float("nan")
    return float(np.sum((q.T @ u) ** 2) / m)


def full_group(eig: EigenFile) -> str | None:
    """The group whose parameters are the union of all other groups' (first in config order), or None."""
    for g in eig.groups:
        others = [h for h in eig.groups if h != g]
        if others and set(eig.params[g]) == set().union(*(eig.params[h] for h in others)):
            return g
    return None


def _cliff_positions(rule: CliffRule, lam: np.ndarray) -> list[int]:
    return sorted(int(c.position) for c in rule(lam))


def localisation_table(eig: EigenFile, k: int | None = None, find_cliffs: CliffRule | None = None) -> pd.DataFrame:
    """Share of the full kernel's top-k eigenspace carried by each layer's top-k eigenspace.

    The full group is the one whose params are the union of all others' (``full_group``); with none,
    the table is empty. Per step, k and other group: ‖Q_layerᵀ Q_full‖²_F / k, with Q the top-k
    eigenvectors (D, k) of each; 1 when the layer's leading eigenspace is the full kernel's, 0 when
    orthogonal to it. k: given, else every cliff position of the full kernel's spectrum at that step
    (one row each: which layer holds which cliff; steps whose full spectrum has no cliff are left
    out; so are groups whose spectrum is zero there). Columns: step, layer, full, k, localisation.
    """
    columns = ["step", "layer", "full", "k", "localisation"]
    full = full_group(eig)
    if full is None:
        return pd.DataFrame(columns=columns)
    rule = None if k is not None else _cliff_rule(find_cliffs)
    rows = []
    for t, step in enumerate(eig.steps):
        ks = [k] if k is not None else _cliff_positions(rule, eig.values[full][t])
        for kt in ks:
            q_full = eig.vectors[full][t, :, :kt]
            for g in eig.groups:
                if g == full or eig.vectors[g].shape[2] < kt or not eig.values[g][t].any():
                    continue  # fewer eigenvectors have no top-k to compare; a zero kernel's are arbitrary
                rows.append((int(step), g, full, kt, normalised_overlap(eig.vectors[g][t, :, :kt], q_full)))
    return pd.DataFrame(rows, columns=columns)


def phase_k(eig: EigenFile, find_cliffs: CliffRule | None = None) -> dict[str, int]:
    """Default k per group for phase detection: the deepest cliff of the group's final spectrum.

    The final eigenspace up to its last cliff is the whole structure the model ends with; a gap
    there also makes that eigenspace well defined (k inside a near-degenerate cluster would turn
    arbitrary mixing within the cluster into false motion). A group with no cliff is left out.
    """
    rule = _cliff_rule(find_cliffs)
    out = {}
    for g in eig.groups:
        cliffs = rule(eig.values[g][-1])
        if cliffs:
            out[g] = max(int(c.position) for c in cliffs)
    return out


def phase_table(
    eig: EigenFile, k: int | dict[str, int] | None = None, find_cliffs: CliffRule | None = None
) -> pd.DataFrame:
    """Label-free phase detection: per layer and checkpoint, how the top-k eigenspace moves.

    k: one for all groups, one per group (groups not named are left out), or None for ``phase_k``
    (each group's deepest final cliff).
    Columns per (step, layer):
    - overlap_next: ‖Q_tᵀ Q_t+1‖²_F / k with the next checkpoint (NaN at the last);
    - overlap_final: ‖Q_tᵀ Q_T‖²_F / k with the final checkpoint (1 at the last);
    - d_overlap_final: its derivative per unit step (central differences, one-sided at the ends);
    - spectrum_change: mean over i ≤ k of |d log λ_i / d step| (central differences): the rate at
      which the top of the spectrum changes shape or scale;
    - k.
    Needs at least two checkpoints.
    """
    if len(eig.steps) < 2:
        raise ValueError(f"phase detection needs at least two checkpoints, got steps {eig.steps.tolist()}")
    ks = phase_k(eig, find_cliffs) if k is None else k if isinstance(k, dict) else dict.fromkeys(eig.groups, k)
    steps = eig.steps.astype(float)
    frames = []
    for g in eig.groups:
        if g not in ks:
            continue
        kg = int(ks[g])
        if not 1 <= kg <= eig.vectors[g].shape[2]:
            raise ValueError(f"k = {kg} for group {g!r} must lie in [1, {eig.vectors[g].shape[2]}]")
        q = eig.vectors[g][:, :, :kg]
        overlap_next = np.array([normalised_overlap(q[t], q[t + 1]) for t in range(len(steps) - 1)] + [np.nan])
        overlap_final = np.array([normalised_overlap(q[t], q[-1]) for t in range(len(steps))])
        log_lam = np.log(np.clip(eig.values[g][:, :kg], np.finfo(float).tiny, None))
        frames.append(
            pd.DataFrame(
                {
                    "step": eig.steps,
                    "layer": g,
                    "k": kg,
                    "overlap_next": overlap_next,
                    "overlap_final": overlap_final,
                    "d_overlap_final": np.gradient(overlap_final, steps),
                    "spectrum_change": np.abs(np.gradient(log_lam, steps, axis=0)).mean(axis=1),
                }
            )
        )
    columns = ["step", "layer", "k", "overlap_next", "overlap_final", "d_overlap_final", "spectrum_change"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def phase_peak(table: pd.DataFrame, layer: str, min_change: float = MIN_PHASE_CHANGE) -> int | None:
    """Step at which ``layer``'s top-k eigenspace moves fastest towards its final form (argmax of d_overlap_final).

    None when there is no transition to locate: the eigenspace's overlap with its final form
    varies by less than ``min_change`` over the run.
    """
    rows = table[table["layer"] == layer]
    if rows.empty:
        raise KeyError(f"no phase rows for layer {layer!r}; layers are {sorted(table['layer'].unique())}")
    ov = rows["overlap_final"].to_numpy()
    if ov.max() - ov.min() < min_change:
        return None
    return int(rows["step"].to_numpy()[np.argmax(rows[PHASE_SIGNAL].to_numpy())])


def _orthonormal(a: np.ndarray) -> np.ndarray:
    """Orthonormal basis (D, r) of the column span of a (D, m), r its numerical rank."""
    if a.size == 0:
        return a[:, :0]
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    return u[:, s > s.max() * max(a.shape) * np.finfo(float).eps] if s.max() > 0 else u[:, :0]


def feature_matrix(features: np.ndarray, n_samples: int) -> np.ndarray:
    """Mean-centred candidate features (N, F): an (N, F) array as given, or integer labels (N,) one-hot."""
    f = np.asarray(features)
    if f.ndim == 1:
        if not np.issubdtype(f.dtype, np.integer) or f.min() < 0:
            raise ValueError("1-D features must be non-negative integer labels (one-hot encoded here)")
        f = np.eye(int(f.max()) + 1)[f]
    if f.ndim != 2 or f.shape[0] != n_samples:
        raise ValueError(f"features must be (N, F) or labels (N,) with N = {n_samples}, got shape {f.shape}")
    f = f.astype(float)
    return f - f.mean(axis=0)


def feature_overlap_table(
    eig: EigenFile,
    features: np.ndarray,
    cliffs: pd.DataFrame | None = None,
    names: Sequence[str] | None = None,
    find_cliffs: CliffRule | None = None,
) -> pd.DataFrame:
    """Overlap of candidate features (mean-centred) with each cliff's eigenspace, per layer and step.

    features: (N, F) values on the probe inputs, or integer labels (N,) → one-hot (N, n_labels).
    cliffs: a ``cliffs_table`` (computed with the cliff rule when None); cliff j's eigenspace is Q,
    its eigenvectors first … position (D, m). Rows per (step, layer, cliff):
    - one per feature f: ‖Qᵀ f‖² / ‖f‖²; for ``flatten`` files f is lifted to the C class blocks
      (U_f = orthonormal span of e_c ⊗ f, c < C) and the overlap is ‖Qᵀ U_f‖²_F / min(C, m);
    - one for the family (feature "(family)"): ‖Qᵀ U‖²_F / min(r, m) with U the orthonormal
      basis (rank r) of all (lifted) features together.
    Columns: step, layer, cliff, first, position, feature, overlap, dim (of the feature's space).
    A feature that is constant over the inputs has no direction: overlap NaN.
    """
    f = feature_matrix(features, eig.n_samples)
    names = [str(n) for n in names] if names is not None else [str(j) for j in range(f.shape[1])]
    if len(names) != f.shape[1]:
        raise ValueError(f"{len(names)} names for {f.shape[1]} features")
    c = eig.n_outputs if eig.outputs == "flatten" else 1

    def lift(cols: np.ndarray) -> np.ndarray:
        # Class-major rows c·N + n: the lifted column for (class c, feature j) is f_j in block c.
        return np.kron(np.eye(c), cols) if c > 1 else cols

    spaces = [(name, lift(_orthonormal(f[:, [j]]))) for j, name in enumerate(names)]
    spaces.append(("(family)", _orthonormal(lift(f))))
    if cliffs is None:
        cliffs = cliffs_table(eig, find_cliffs=find_cliffs)
    rows = []
    for cl in cliffs.itertuples(index=False):
        t = eig.index(int(cl.step))
        q = eig.vectors[cl.layer][t, :, cl.first - 1 : cl.position]
        for name, u in spaces:
            rows.append(
                (
                    int(cl.step),
                    cl.layer,
                    int(cl.cliff),
                    int(cl.first),
                    int(cl.position),
                    name,
                    normalised_overlap(q, u),
                    u.shape[1],
                )
            )
    columns = ["step", "layer", "cliff", "first", "position", "feature", "overlap", "dim"]
    return pd.DataFrame(rows, columns=columns)
