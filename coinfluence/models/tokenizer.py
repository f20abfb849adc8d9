"""A word-level fast tokenizer built from the task's own words.

Convention (what makes decode(encode(text)) == text for the task's texts):

* a space is never a token of its own when it precedes a piece; it is folded into the
  piece as the marker ``▁`` ("▁Zoo" is " Zoo"), so "3 + 4" is ``3 ▁+ ▁4``;
* pieces are words (runs of letters), single digits (so every integer is representable)
  and single punctuation marks, the apostrophe of "Zoo's" included (``▁Zoo ' s``); with
  ``possessive=True`` a possessive is one piece (``▁Zoo's``), so that the name after it ("each
  Zoo's Lion") follows a token that identifies its owner: a model copying "Lion" from the question
  then matches one token, not three;
* a newline is a token; a space that precedes nothing (double or trailing space) is the
  token ``▁``;
* the decoder turns ``▁`` back into a space and concatenates, so text round-trips exactly
  whenever every piece is in the vocabulary.

``<answer>``/``</answer>`` are added (non-special) tokens: they are matched before
pre-tokenisation, stay single tokens and survive ``skip_special_tokens=True``.
``<bos>``, ``<eos>``, ``<pad>``, ``<unk>`` are special tokens.
"""

from __future__ import annotations

import re
import string
from typing import Iterable

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from coinfluence.tasks.answer import ANSWER_CLOSE, ANSWER_OPEN

BOS, EOS, PAD, UNK = "<bos>", "<eos>", "<pad>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]
MARKER_TOKENS = [ANSWER_OPEN, ANSWER_CLOSE]
SPACE = "\u2581"  # "▁", the folded-in space

# Words, single digits, single punctuation marks (each optionally led by one folded space),
# newlines, and a lone folded space. Everything else is split to single characters.
_PIECE = rf"{SPACE}?[A-Za-z]+|{SPACE}?[0-9]|{SPACE}?[^{SPACE}\sA-Za-z0-9]|\n|{SPACE}|\s"
_POSSESSIVE = rf"{SPACE}?[A-Za-z]+'s(?![A-Za-z])|"
_MARKER_RE = re.compile("|".join(re.escape(t) for t in MARKER_TOKENS))


def piece_pattern(possessive: bool = False) -> str:
    return (_POSSESSIVE if possessive else "") + _PIECE


def split_pieces(text: str, possessive: bool = False) -> list[str]:
    """The pre-tokenised pieces of ``text`` (markers removed), in the tokenizer's own rules."""
    piece = re.compile(piece_pattern(possessive))
    pieces: list[str] = []
    for chunk in _MARKER_RE.split(text):
        pieces.extend(piece.findall(chunk.replace(" ", SPACE)))
    return pieces


def _base_pieces() -> list[str]:
    """Digits, letters' punctuation and the layout tokens, with and without a leading space."""
    bare = list(string.digits) + list(string.punctuation)
    return bare + [SPACE + p for p in bare] + ["\n", SPACE]


def build_tokenizer(texts_or_words: Iterable[str], *, possessive: bool = False) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary covers every piece of ``texts_or_words``.

    Items may be whole texts (prompts, completions) or single words; each word is added both
    with and without a leading space, so a word seen once anywhere can appear anywhere.
    ``possessive`` keeps "Zoo's" as one piece (module docstring).
    """
    seen: set[str] = set()
    for text in texts_or_words:
        for piece in split_pieces(text, possessive):
            seen.add(piece.lstrip(SPACE) or piece)
    words = sorted(p for p in seen if p not in ("\n", SPACE) and not p.isspace())
    pieces = _base_pieces() + [w for w in words] + [SPACE + w for w in words]
    vocab: dict[str, int] = {}
    for tok in SPECIAL_TOKENS + pieces:  # specials first: pad=0, bos=1, eos=2, unk=3
        vocab.setdefault(tok, len(vocab))

    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Replace(" ", SPACE)
    core.pre_tokenizer = pre_tokenizers.Split(Regex(piece_pattern(possessive)), behavior="isolated")
    core.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.Fuse()])
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    core.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKER_TOKENS])

    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="right",
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],
    )


def unknown_pieces(tokenizer: PreTrainedTokenizerFast, text: str, possessive: bool = False) -> list[str]:
    """Pieces of ``text`` missing from a tokenizer built here (they would encode as ``<unk>``)."""
    vocab = tokenizer.get_vocab()
    return [p for p in split_pieces(text, possessive) if p not in vocab]
