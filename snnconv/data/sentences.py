"""A fixed, generated English sentence set for text-model checks (no download, deterministic).

``test_sentences()`` is 16 subjects x 16 predicates (256 sentences); ``calibration_sentences()``
uses disjoint word lists (48 sentences), so thresholds are never fitted on the sentences they are
evaluated on. Used by ``snnconv convert --model hf:...`` and ``scripts/bench_transformer.py``.
"""
from __future__ import annotations

SUBJECTS = ["the cat", "a young doctor", "my neighbour", "the old fisherman", "a small robot", "the teacher",
            "our football team", "the river", "a tired student", "the president", "my grandmother",
            "the hungry dog", "a famous singer", "the pilot", "two little children", "the city council"]
PREDICATES = ["walks slowly along the beach", "reads a long book about history", "fixes the broken car",
              "sings loudly in the morning", "plays football with friends", "cooks dinner for the family",
              "watches the stars at night", "writes computer code all day", "is afraid of thunderstorms",
              "sells fresh vegetables at the market", "flies over the mountains", "forgot the keys at home",
              "won an important prize", "cleans the kitchen after lunch", "is painting a picture of the sea",
              "waits for the bus in the rain"]
CALIB_SUBJECTS = ["a farmer", "the nurse", "my brother", "an engineer", "the bird", "a quiet girl", "the chef",
                  "our company"]
CALIB_PREDICATES = ["drinks hot coffee", "builds a wooden house", "travels to another country", "laughs at the joke",
                    "lost the game yesterday", "repairs old watches"]


def test_sentences() -> list[str]:
    return [f"{s} {p}." for s in SUBJECTS for p in PREDICATES]


def calibration_sentences() -> list[str]:
    return [f"{s} {p}." for s in CALIB_SUBJECTS for p in CALIB_PREDICATES]
