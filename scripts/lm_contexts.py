"""Rule lm_contexts: the author's probe contexts of a language model (docs/spec.md §4), labelled by
the class of the next word and kept where the trained model's greedy next word has that class."""

from transformers import AutoTokenizer

from entk import lm
from entk import shared as wf
from entk.kinds.registry import get_kind
from entk.pipeline import lm_views

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    wf.set_threads(sm.threads)
    exp, s, draw = sm.params.exp, sm.params.lm, int(sm.wildcards.draw)
    directory = f"{sm.input.hf}/step_{sm.params.step}"
    model = lm.load_causal_lm(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    corpus = get_kind(exp["kind"]).function("corpus")(exp["settings"], sm.params.seed, exp["seed_key"], "probe")
    contexts = lm_views.build_contexts(
        model, tokenizer, corpus, list(s["classes"]), s["per_class"], s["context_length"], seed=draw
    )
    print(
        f"{len(contexts['labels'])} contexts from {contexts['candidates']} candidate targets of {len(corpus)} stories"
    )
    wf.save_npz(sm.output.contexts, **contexts)
