"""Generated short stories in real English words, every word tagged with its UPOS class (docs/spec.md §4).

A story introduces a named character (PROPN) and sometimes a friend, then tells 4–8 sentences in
which the characters recur by name or by pronoun (PRON), act (VERB) on things (DET ADJ NOUN), in
places (ADP DET NOUN), with adverbs (ADV) before or after the verb, states (AUX ADJ), clauses joined
by a conjunction (CCONJ) or a subordinator (SCONJ), and sentences ending in PUNCT. Every word has
one tag in the whole vocabulary (``TAGS``), so the class of any word — the model's greedy next word
included — is a look-up. Pure Python; a story depends only on the ``random.Random`` it is given.
"""

from __future__ import annotations

import random

TARGET_CLASSES = ("PUNCT", "PRON", "PROPN", "DET", "ADV", "CCONJ", "NOUN", "VERB")

# The character's name and the pronouns that refer back to them (subject, object).
NAMES = {
    "Lily": "she",
    "Mia": "she",
    "Anna": "she",
    "Zoe": "she",
    "Ella": "she",
    "Sue": "she",
    "Tom": "he",
    "Ben": "he",
    "Max": "he",
    "Leo": "he",
    "Sam": "he",
    "Tim": "he",
}
OBJECT_PRONOUN = {"she": "her", "he": "him", "they": "them"}
POSSESSIVE = {"she": "her", "he": "his", "they": "their"}

PEOPLE = ("girl", "boy", "dog", "cat", "bird", "bunny", "bear", "frog")
THINGS = ("ball", "box", "tree", "cake", "toy", "book", "hat", "flower", "apple", "kite", "car", "stick", "rock", "cup")
PLACES = ("park", "garden", "house", "forest", "river", "school", "hill", "room", "sky", "lake")
ADJECTIVES = ("big", "little", "red", "happy", "sad", "small", "shiny", "old", "new", "kind", "funny", "soft", "tall")
FEELINGS = ("happy", "sad", "scared", "tired", "angry", "proud", "excited", "hungry")
TRANSITIVE = ("saw", "found", "liked", "took", "wanted", "loved", "made", "opened", "held", "lost", "shared", "hugged")
INTRANSITIVE = ("ran", "jumped", "smiled", "played", "laughed", "slept", "walked", "cried", "danced", "sang")
MANNER = ("quickly", "slowly", "happily", "softly", "carefully", "loudly")
TIME = ("then", "later", "soon", "suddenly")
PREPOSITIONS = ("in", "on", "near", "under", "to", "into", "with")
DETERMINERS = ("the", "a", "this", "that", "every", "some")
CONJUNCTIONS = ("and", "but", "so")
SUBORDINATORS = ("because", "when")
AUXILIARIES = ("was", "felt")

TAGS: dict[str, str] = {
    **dict.fromkeys(NAMES, "PROPN"),
    **dict.fromkeys(("she", "he", "they", "her", "him", "them", "his", "their", "it", "there"), "PRON"),
    **dict.fromkeys((*PEOPLE, *THINGS, *PLACES, "time", "friend", "day"), "NOUN"),
    **dict.fromkeys((*ADJECTIVES, *FEELINGS), "ADJ"),
    **dict.fromkeys((*TRANSITIVE, *INTRANSITIVE, "named", "had", "lived"), "VERB"),
    **dict.fromkeys((*MANNER, *TIME, "once", "very", "home", "together"), "ADV"),
    **dict.fromkeys((*PREPOSITIONS, "upon"), "ADP"),
    **dict.fromkeys(DETERMINERS, "DET"),
    **dict.fromkeys(CONJUNCTIONS, "CCONJ"),
    **dict.fromkeys(SUBORDINATORS, "SCONJ"),
    **dict.fromkeys(AUXILIARIES, "AUX"),
    **dict.fromkeys((".", "!", ","), "PUNCT"),
    "one": "NUM",
}
VOCABULARY = tuple(TAGS)


class _Teller:
    """Writes one story: the cast, who was named last, and the words so far."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.words: list[str] = []
        self.hero = rng.choice(sorted(NAMES))
        self.friend = rng.choice(sorted(set(NAMES) - {self.hero})) if rng.random() < 0.5 else None

    def say(self, *words: str) -> None:
        self.words.extend(words)

    def pick(self, options) -> str:
        return self.rng.choice(options)

    def noun_phrase(self, nouns=THINGS) -> None:
        """DET [ADV? ADJ] NOUN."""
        self.say(self.pick(DETERMINERS))
        if self.rng.random() < 0.5:
            if self.rng.random() < 0.2:
                self.say("very")
            self.say(self.pick(ADJECTIVES))
        self.say(self.pick(nouns))

    def subject(self) -> str:
        """A character by name or by pronoun; returns the pronoun that refers to the subject."""
        cast = [self.hero] if self.friend is None else [self.hero, self.friend]
        r = self.rng.random()
        if self.friend is not None and r < 0.15:
            self.say(self.hero, "and", self.friend)
            return "they"
        who = self.pick(cast)
        if r < 0.55:
            self.say(who)
        else:
            self.say(NAMES[who])
        return NAMES[who]

    def object(self, pronoun: str) -> None:
        r = self.rng.random()
        if r < 0.2:
            self.say(self.pick(("it", OBJECT_PRONOUN[self.pick(("she", "he", "they"))])))
        elif r < 0.4:
            self.say(POSSESSIVE[pronoun])
            self.say(self.pick(THINGS))
        else:
            self.noun_phrase()

    def place(self) -> None:
        self.say(self.pick(PREPOSITIONS))
        self.noun_phrase(PLACES)

    def clause(self) -> None:
        """Subject, verb and what follows, with adverbs before or after the verb."""
        pronoun = self.subject()
        r = self.rng.random()
        if r < 0.2:
            self.say(self.pick(AUXILIARIES))
            if self.rng.random() < 0.3:
                self.say("very")
            self.say(self.pick(FEELINGS))
            return
        if self.rng.random() < 0.3:
            self.say(self.pick(MANNER))
        if r < 0.6:
            self.say(self.pick(TRANSITIVE))
            self.object(pronoun)
        else:
            self.say(self.pick(INTRANSITIVE))
            if self.rng.random() < 0.2:
                self.say(self.pick(("home", "together")))
        if self.rng.random() < 0.4:
            self.place()
        if self.rng.random() < 0.3:
            self.say(self.pick(MANNER))

    def sentence(self) -> None:
        if self.rng.random() < 0.25:
            self.say(self.pick(TIME), ",")
        elif self.rng.random() < 0.1:
            self.say("one", "day", ",")
        self.clause()
        r = self.rng.random()
        if r < 0.35:
            if self.rng.random() < 0.5:
                self.say(",")
            self.say(self.pick(CONJUNCTIONS))
            self.clause()
        elif r < 0.5:
            self.say(self.pick(SUBORDINATORS))
            self.clause()
        self.say(self.pick((".", ".", ".", "!")))

    def tell(self) -> list[str]:
        self.say("once", "upon", "a", "time", ",", "there", "was", "a")
        if self.rng.random() < 0.5:
            self.say(self.pick(ADJECTIVES))
        self.say(self.pick(PEOPLE), "named", self.hero, ".")
        if self.friend is not None:
            self.say(NAMES[self.hero], "had", "a", "friend", "named", self.friend, ".")
        for _ in range(self.rng.randint(4, 8)):
            self.sentence()
        return self.words


def story(rng: random.Random) -> list[str]:
    """One story as a list of words (every one in ``TAGS``)."""
    return _Teller(rng).tell()


def stories(n: int, seed: int) -> list[list[str]]:
    """``n`` stories from ``random.Random(seed)``: the same seed gives the same stories."""
    rng = random.Random(seed)
    return [story(rng) for _ in range(n)]


def tags(words: list[str]) -> list[str]:
    """The UPOS tag of each word."""
    return [TAGS[w] for w in words]
