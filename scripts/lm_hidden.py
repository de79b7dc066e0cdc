"""Rule lm_hidden: every block's output hidden state at the analysed position of each probe context
(L + 1, N, C): the PCA baseline's activations (docs/spec.md §4)."""

import numpy as np
import torch

from entk import lm
from entk import shared as wf
from entk.pipeline import lm_views

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    wf.set_threads(sm.threads)
    model = lm.load_causal_lm(sm.params.model_dir, dtype=getattr(torch, sm.params.lm["dtype"]))
    with np.load(sm.input.contexts) as data:
        ids = torch.from_numpy(data["ids"])
    hidden = lm_views.last_hidden_states(model, ids, sm.params.lm["position"])
    print(f"hidden states {hidden.shape}")
    wf.save_npz(sm.output.hidden, hidden=hidden)
