"""Toy English sentiment: a Python predictor scoring text against a hand-written word lexicon.

The weights in ``weights.json`` are written by hand in ``examples/make_examples.py`` (scikit-learn
ships no text data to learn them from offline): this example shows the predictor contract, not a
useful sentiment model. The score is the sum of the weights of the words found; a negator ("not",
"never", "didn't", ...) flips the words among the next few tokens, up to the next punctuation.
"""

import json
import math
import re
from pathlib import Path
from typing import Literal, TypedDict

from chalicelib.runtime.predictor import BasePredictor, Input

WEIGHTS = Path(__file__).with_name("weights.json")
TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|[.,;:!?]")


class SentimentResult(TypedDict):
    label: Literal["positive", "negative"]
    score: float
    probability: float
    words: list[str]


class Predictor(BasePredictor):
    def setup(self) -> None:
        doc = json.loads(WEIGHTS.read_text(encoding="utf-8"))
        self.weights: dict[str, float] = {w: float(v) for w, v in doc["weights"].items()}
        self.negators = frozenset(doc["negators"])
        self.window = int(doc["negation_window"])

    def predict(
        self,
        text: str = Input(description="English text", min_length=1, max_length=2000),
        threshold: float = Input(
            default=0.0,
            ge=-5.0,
            le=5.0,
            description="the label is positive when the score is above this",
        ),
    ) -> SentimentResult:
        score = 0.0
        words = []
        negated_until = -1
        for i, token in enumerate(TOKEN.findall(text.lower().replace("\u2019", "'"))):
            if not token[0].isalpha():  # punctuation ends a negation's reach
                negated_until = -1
                continue
            if token in self.negators or token.endswith("n't"):
                negated_until = i + self.window
                continue
            weight = self.weights.get(token)
            if weight is None:
                continue
            if i <= negated_until:
                weight, token = -weight, "not " + token
            score += weight
            words.append(token)
        return {
            "label": "positive" if score > threshold else "negative",
            "score": round(score, 3),
            "probability": round(_sigmoid(score), 4),
            "words": words,
        }


def _sigmoid(x: float) -> float:
    """Probability-like squashing of the score, without overflow for long texts."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)
