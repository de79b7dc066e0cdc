"""A stand-in for your own checkpoints: writes a tiny Llama, three checkpoints of one short training
run saved as Hugging Face directories, and its probe contexts with a label each.

    python make_model.py            # writes model/step_0, model/step_40, model/step_80, tokens.npy,
                                    # labels.txt, text.txt, text_labels.txt (a few seconds on a laptop)

Nothing is downloaded: the text is made of short sentences from a small grammar in which every
word has one part-of-speech (UPOS) tag, and the tokenizer is word level, built in memory with
`tokenizers` and saved beside each checkpoint. Each context is the 8 words before a word of the
text; its label is that word's tag: the class of the word the model is about to write. For your own
model, replace all of this by your directories and your tagger's labels (README.md shows the
Stanza call).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

HERE = Path(__file__).resolve().parent
WORDS = {
    "DET": ("the", "a", "every"),
    "ADJ": ("big", "red", "small", "old"),
    "NOUN": ("dog", "cat", "ball", "tree", "bird", "box"),
    "PRON": ("she", "he", "they"),
    "VERB": ("saw", "took", "liked", "found"),
    "ADV": ("then", "slowly", "soon"),
    "CCONJ": ("and", "but"),
    "PUNCT": (".",),
}
TAGS = {w: tag for tag, words in WORDS.items() for w in words}
CONTEXT = 8  # words per context
STEPS = (0, 40, 80)  # the checkpoints saved: the training axis of the example
N_CONTEXTS = 200


def sentence(rng: random.Random) -> list[str]:
    """PRON or DET (ADJ) NOUN, (ADV) VERB, DET (ADJ) NOUN, then '.' or CCONJ and another clause."""
    pick = lambda tag: rng.choice(WORDS[tag])  # noqa: E731

    def noun_phrase() -> list[str]:
        return [pick("DET"), *([pick("ADJ")] if rng.random() < 0.5 else []), pick("NOUN")]

    subject = [pick("PRON")] if rng.random() < 0.4 else noun_phrase()
    clause = [*subject, *([pick("ADV")] if rng.random() < 0.3 else []), pick("VERB"), *noun_phrase()]
    return clause + ([pick("CCONJ"), *sentence(rng)] if rng.random() < 0.3 else [pick("PUNCT")])


def text(n_words: int, seed: int) -> list[str]:
    """At least ``n_words`` words of sentences from ``random.Random(seed)``."""
    rng, words = random.Random(seed), []
    while len(words) < n_words:
        words += sentence(rng)
    return words


def tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the grammar's words (id 0 pads, 1 is unknown)."""
    vocab = {w: i for i, w in enumerate(("[PAD]", "[UNK]", *TAGS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


def config(vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
    )


def main(out: Path = HERE) -> None:
    """Write the checkpoints, contexts and labels into ``out``."""
    # A model this small gains nothing from a second thread, and on a busy machine the threads' waits
    # make it 50 times slower.
    torch.set_num_threads(1)
    tok = tokenizer()
    train_words = text(20000, seed=1)
    probe = text((N_CONTEXTS + 1) * CONTEXT + 1, seed=2)
    stream = torch.tensor(tok(" ".join(train_words), add_special_tokens=False)["input_ids"])

    torch.manual_seed(0)
    model = LlamaForCausalLM(config(len(tok)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    shutil.rmtree(out / "model", ignore_errors=True)
    for step in range(STEPS[-1] + 1):
        if step in STEPS:
            model.save_pretrained(out / "model" / f"step_{step}")
            tok.save_pretrained(out / "model" / f"step_{step}")
        starts = torch.randint(0, len(stream) - CONTEXT - 1, (32,), generator=gen)
        batch = stream[starts[:, None] + torch.arange(CONTEXT + 1)]
        loss = F.cross_entropy(model(input_ids=batch[:, :-1]).logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()

    # Token-id contexts: the 8 words before a randomly placed word of the probe text, labelled by its tag.
    rng = random.Random(0)
    targets = sorted(rng.sample(range(CONTEXT, len(probe)), N_CONTEXTS))
    ids = [tok(" ".join(probe[i - CONTEXT : i]), add_special_tokens=False)["input_ids"] for i in targets]
    np.save(out / "tokens.npy", np.asarray(ids, dtype=np.int64))
    (out / "labels.txt").write_text("".join(f"{TAGS[probe[i]]}\n" for i in targets))

    # The same text as a file: cut into consecutive windows of 8 words, each labelled by the next word's tag.
    words = probe[: N_CONTEXTS * CONTEXT + 1]
    (out / "text.txt").write_text(" ".join(words[:-1]) + "\n")
    (out / "text_labels.txt").write_text("".join(f"{TAGS[words[(i + 1) * CONTEXT]]}\n" for i in range(N_CONTEXTS)))
    print(f"wrote {out / 'model'} (steps {list(STEPS)}), {N_CONTEXTS} contexts of {CONTEXT} tokens and their labels")


if __name__ == "__main__":
    main()
