"""Rule lm_contexts: the author's probe contexts of a language model (docs/spec.md §4), labelled by
the class of the next word and kept where the trained model's greedy next word has that class; for
a model of the user's, the contexts and labels of its files (its kind's ``contexts``)."""

import torch
from transformers import AutoTokenizer

from entk import lm
from entk import shared as wf
from entk.pipeline import lm_views
from entk.pipeline.experiments import Experiment

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    wf.set_threads(sm.threads)
    exp, s, draw = Experiment.from_params(sm.params.exp), sm.params.lm, int(sm.wildcards.draw)
    directory = sm.params.model_dir
    kind = exp.registered_kind
    if "contexts" in kind.functions:
        # A model of the user's: its contexts and labels are files, the same at every draw.
        where = f"config key 'language_models.{exp.id}.modules'"
        contexts = kind.function("contexts")(exp.settings, s, directory, sm.params.modules, where)
        print(f"{len(contexts['labels'])} contexts of the classes {s['classes']} from the user's files")
    else:
        model = lm.load_causal_lm(directory, dtype=getattr(torch, s["dtype"]))
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        corpus = kind.function("corpus")(exp.settings, sm.params.seed, exp.seed_key, "probe")
        contexts = lm_views.build_contexts(
            model, tokenizer, corpus, list(s["classes"]), s["per_class"], s["context_length"], seed=draw
        )
        print(
            f"{len(contexts['labels'])} contexts from {contexts['candidates']} candidate targets of {len(corpus)} "
            "stories"
        )
    wf.save_npz(sm.output.contexts, **contexts)
