"""The text side of RLHF in miniature: a generated corpus of restaurant reviews, a character tokenizer,
and the hidden *annotator* whose rule is the gold reward.

The corpus is one document per line. Each line is a short review made by a small grammar::

    the soup was great and the staff were kind.
    the bread was stale, but the view was lovely.

Adjectives come from a sentiment lexicon (:data:`POSITIVE`, :data:`NEGATIVE`), so a reader can prefer
one review over another, and a rule can play that reader: :class:`Annotator` counts positive minus
negative words and takes a point off per word it does not know (a misspelling, made-up text). Any UTF-8
text file can replace the generated corpus (``--corpus FILE``); the annotator then judges it with the
same lexicon.

The tokenizer maps characters to ids. The newline, which ends every document, is the end-of-text token
(id 0): the model learns where a review stops, and a completion's *response* is the text up to it.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..errors import MinippoError

EOT = "\n"  # the end-of-text token: the newline that ends each document

# The sentiment lexicon of the annotator (and the adjectives of the generated grammar).
POSITIVE = ("great", "good", "kind", "fresh", "lovely", "warm", "tasty", "superb", "friendly", "quick",
            "clean", "cosy")
NEGATIVE = ("bad", "cold", "rude", "stale", "awful", "slow", "bland", "dirty", "noisy", "soggy", "dull",
            "salty")

# noun -> (verb, adjectives that make sense for it). Each list mixes both polarities.
_NOUNS = {
    "soup": ("was", ("great", "tasty", "warm", "good", "cold", "bland", "salty", "awful")),
    "bread": ("was", ("fresh", "warm", "good", "stale", "soggy", "bad")),
    "pasta": ("was", ("superb", "tasty", "fresh", "bland", "soggy", "salty")),
    "coffee": ("was", ("great", "warm", "good", "cold", "bad", "awful")),
    "room": ("was", ("lovely", "clean", "cosy", "warm", "dirty", "noisy", "cold", "dull")),
    "service": ("was", ("quick", "friendly", "superb", "good", "slow", "rude", "awful", "bad")),
    "view": ("was", ("lovely", "superb", "great", "dull", "bad")),
    "music": ("was", ("lovely", "great", "good", "noisy", "dull", "awful")),
    "staff": ("were", ("kind", "friendly", "quick", "great", "rude", "slow", "awful")),
    "waiters": ("were", ("kind", "friendly", "quick", "rude", "slow", "dull")),
    "chips": ("were", ("tasty", "fresh", "great", "soggy", "cold", "salty", "stale")),
    "tables": ("were", ("clean", "lovely", "dirty", "noisy")),
}
_INTENSIFIERS = ("very ", "really ", "so ")
_JOINERS = (" and ", ", but ", ", and ", " while ")


def generate_corpus(num_documents: int = 6000, seed: int = 0) -> str:
    """A deterministic corpus of ``num_documents`` reviews, one per line, each ending with ``"."``.

    A review has 1–3 clauses ``the <noun> was|were [very ]<adjective>``. Its *mood* (the probability
    that an adjective is positive) is drawn per review from {0.2, 0.5, 0.8}, so the corpus holds glowing,
    mixed and scathing reviews: the pretrained model samples all three, and a preference for positive
    ones can be learned from comparisons. Same ``num_documents`` and ``seed``, same text.
    """
    if num_documents < 1:
        raise MinippoError(f"num_documents={num_documents} must be at least 1.")
    rng = random.Random(seed)
    lines = []
    for _ in range(num_documents):
        mood = rng.choice((0.2, 0.5, 0.8))
        clauses = []
        for noun in rng.sample(sorted(_NOUNS), rng.choice((1, 2, 2, 3))):
            verb, adjectives = _NOUNS[noun]
            positive = rng.random() < mood
            pool = [a for a in adjectives if (a in POSITIVE) == positive]
            intensifier = rng.choice(_INTENSIFIERS) if rng.random() < 0.25 else ""
            clauses.append(f"the {noun} {verb} {intensifier}{rng.choice(pool)}")
        text = clauses[0]
        for clause in clauses[1:]:
            text += rng.choice(_JOINERS) + clause
        lines.append(text + ".")
    return EOT.join(lines) + EOT


def load_corpus(path: str | Path | None = None, num_documents: int = 6000, seed: int = 0) -> str:
    """The text of ``path`` (any UTF-8 file; one document per line), or the generated corpus if ``None``.

    Raises:
        MinippoError: the file is missing, not UTF-8, or has fewer than 2 non-empty lines.
    """
    if path is None:
        return generate_corpus(num_documents, seed)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MinippoError(f"Corpus file {path} does not exist. Pass an existing UTF-8 text file to "
                           "--corpus, or leave --corpus out to use the generated reviews.") from None
    except UnicodeDecodeError as e:
        raise MinippoError(f"Corpus file {path} is not UTF-8 text ({e.reason} at byte {e.start}). "
                           "Convert it to UTF-8, e.g. with iconv.") from None
    lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    if len(lines) < 2:
        raise MinippoError(f"Corpus file {path} has {len(lines)} non-empty line(s); it needs at least 2 "
                           "(one document per line; some are held out for validation).")
    return EOT.join(lines) + EOT


def corpus_hash(text: str) -> str:
    """A short SHA-256 of the corpus, part of the cache key of the pretrained model."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class CharTokenizer:
    """Characters ↔ integer ids. Id 0 is the end-of-text token (the newline); the other ids are the
    corpus's characters in sorted order, so the same corpus always gives the same vocabulary.

    Args:
        chars: the vocabulary, id order; build it with :meth:`from_text`.
    """

    def __init__(self, chars: Sequence[str]):
        self.chars = list(chars)
        if not self.chars or self.chars[0] != EOT or len(set(self.chars)) != len(self.chars):
            raise MinippoError("A tokenizer vocabulary must start with the end-of-text token '\\n' and "
                               "list each character once; build it with CharTokenizer.from_text(corpus).")
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.eot_id = 0

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls([EOT] + sorted(set(text) - {EOT}))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``'s characters.

        Raises:
            MinippoError: a character is not in the vocabulary; the message names it and the fix.
        """
        try:
            return [self.index[c] for c in text]
        except KeyError as e:
            c = e.args[0]
            raise MinippoError(
                f"The character {c!r} (U+{ord(c):04X}) is not in the tokenizer's vocabulary, which holds "
                f"only the {self.vocab_size - 1} characters of the training corpus. Remove it from the "
                "text, or add text containing it to the corpus and pretrain again.") from None

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        return "".join(self.chars[i] for i in ids)


def response_text(text: str) -> str:
    """The response: a completion up to (not including) its first end-of-text token."""
    return text.split(EOT, 1)[0]


def document_text(tokenizer: CharTokenizer, tokens: Sequence[int] | Tensor) -> str:
    """The document a prompt-plus-completion sequence holds, as the annotator reads it: the prompt's
    characters after its leading end-of-text token, then the response (``"the soup was great."``)."""
    text = tokenizer.decode(tokens)
    return response_text(text[1:] if text.startswith(EOT) else text)


class Annotator:
    """The hidden annotator: a rule that plays the human labeller and defines the *gold* reward.

        gold(response) = #positive words − #negative words − #unknown words

    where words are maximal runs of letters, the two polarities come from the lexicon :data:`POSITIVE` /
    :data:`NEGATIVE`, and *unknown* means "never seen in the corpus" (misspellings, made-up words). The
    learned reward model only sees this rule through noisy comparisons (:func:`minippo.lm.reward_model.
    make_preference_pairs`), so it is a *proxy* that a policy can over-optimise.

    Args:
        corpus: the training text; its words are the known vocabulary.
    """

    _word = re.compile(r"[^\W\d_]+")

    def __init__(self, corpus: str):
        self.known = set(self._word.findall(corpus.lower())) | set(POSITIVE) | set(NEGATIVE)

    def gold_reward(self, document: str) -> float:
        """The gold reward of one document (prompt characters and response, :func:`document_text`), in
    words."""
        score = 0
        for word in self._word.findall(document.lower()):
            if word in POSITIVE:
                score += 1
            elif word in NEGATIVE:
                score -= 1
            elif word not in self.known:
                score -= 1
        return float(score)


def make_prompts(corpus: str, tokenizer: CharTokenizer, prompt_chars: int) -> Tensor:
    """Prompts from the corpus: the end-of-text token followed by the first ``prompt_chars`` characters
    of each distinct document long enough to have them (the EOT says "a new document starts here").

    Returns:
        ``[M, prompt_chars + 1]`` int64 token ids, one row per distinct prompt, in sorted order.

    Raises:
        MinippoError: no document has ``prompt_chars`` characters.
    """
    starts = sorted({line[:prompt_chars] for line in corpus.split(EOT) if len(line) > prompt_chars})
    if not starts:
        raise MinippoError(f"No document in the corpus is longer than prompt_chars={prompt_chars}; use a "
                           "smaller prompt length or a corpus with longer lines.")
    return torch.tensor([[tokenizer.eot_id] + tokenizer.encode(s) for s in starts], dtype=torch.long)
