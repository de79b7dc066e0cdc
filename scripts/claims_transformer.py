"""Rule claims_transformer: the Transformer's key frequencies by two routes, the Table-2 analogue,
the W_U grokking diagnostic and the claims rows (paper §3), each written once for the figures."""

import pandas as pd

from entk import shared as wf
from entk.analyses import transformer_analysis as ta
from entk.analyses.analysis import load_eigen
from entk.analyses.claims import format_scorecard, scorecard

sm = snakemake  # noqa: F821 (injected by Snakemake)


with wf.logged(sm.log[0]):
    p, threshold, bands = sm.params.p, sm.params.grok_threshold, sm.params.claims
    tensors, unembed = load_eigen(sm.input.tensors), load_eigen(sm.input.unembed)
    w_e = tensors.weights["W_E"]
    # Route (b) reads the top 16 W_U eNTK modes: 1 + 2·n_keys of them hold the keys for up to 7 keys.
    keys = ta.key_frequencies_embedding(w_e, p)
    keys_ntk = ta.key_frequencies_ntk(tensors.vectors["W_U"][-1][:, :16], p)
    print(f"key frequencies: W_E Fourier power {keys}; W_U eNTK modes {keys_ntk}")
    families = ta.key_families(p, keys)
    groups = ta.default_groups(len(keys), tensors.values["W_U"].shape[1])[:2]
    final = {t: (tensors.values[t][-1], tensors.vectors[t][-1]) for t in tensors.groups}
    layers = ta.layer_table(final, families, groups)
    history = wf.read_history(sm.input.history, sm.params.history_steps)
    n_top = groups[0][1]
    curve, peak, grok = ta.grokking_diagnostic(
        unembed.steps, unembed.vectors["W_U"], history, families["sum"], n_top=n_top, threshold=threshold
    )
    curve["peak_epoch"], curve["grok_epoch"] = peak, grok
    phases = pd.read_csv(sm.input.phases)
    hit = phases.loc[(phases["layer"] == "W_U") & phases["peak"].astype(bool), "step"]
    detector = int(hit.iloc[0]) if len(hit) else None
    rows = ta.key_frequency_claims(keys, keys_ntk) + ta.accuracy_claims(history, bands)
    rows += ta.unembed_claims(tensors.vectors["W_U"][-1], families, len(keys), bands)
    rows += ta.grokking_claims(peak, grok, threshold, n_top, bands) + ta.detector_claims(
        detector, grok, threshold, bands
    )
    table = scorecard(rows)
    print(layers.pivot_table(index="tensor", columns=["group", "family"], values="overlap").round(2).to_string())
    print(format_scorecard(table))
    keys_table = pd.DataFrame(
        {
            "route": ["W_E Fourier power", "W_U eNTK modes"],
            "keys": [" ".join(map(str, keys)), " ".join(map(str, keys_ntk))],
        }
    )
    for frame, path in (
        (keys_table, sm.output.frequencies),
        (layers, sm.output.layers),
        (curve, sm.output.curve),
        (table, sm.output.claims),
    ):
        wf.save_csv(path, frame)
