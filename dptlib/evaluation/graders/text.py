"""The words T2I-CompBench takes out of a prompt, read by spaCy as the benchmark reads them.

- **Noun chunks** (B-VQA): ``doc.noun_chunks`` without the chunks 'top', 'the side', 'the left',
  'the right'; the benchmark asks "{chunk}?" for at most 8 of them (``BLIPvqa_eval/BLIP_vqa.py``).
- **The two objects of a spatial prompt** (``UniDet_eval/2D_spatial_eval.py``): the first and the
  last NOUN (the spatial category); in complex mode, for each preposition of
  :data:`COMPLEX_PREPOSITIONS` the nearest NOUN / PROPN before it and the first NOUN after it (a
  PROPN followed by a non-PROPN where no NOUN follows): exactly two found, or none.
- **The prompt without adjectives** (``CLIPScore_eval/CLIP_similarity.py --complex``): the tokens
  whose part of speech is not ADJ, joined by spaces; 3-in-1's CLIP part scores it.

The benchmark pins spaCy 3.5.3 with ``en_core_web_sm`` 3.5.0. :func:`load_reader` returns spaCy's
reader where spaCy and that model are installed (``pip install -e '.[paper]'`` then
``python -m spacy download en_core_web_sm``), else :class:`RuleReader`, a tagger of word lists
and suffixes with the same interface, whose name says it is a fallback; its agreement with spaCy
and with hand-labelled chunks is measured in ``docs/paper-scale.md`` (``tests/fallback_agreement.py``).
The rules of the three items above are functions of (token text, part of speech) pairs, so they
are tested against the benchmark's own code on recorded spaCy tags without spaCy installed.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

DROPPED_CHUNKS = ("top", "the side", "the left", "the right")  # BLIP_vqa.py drops these chunks
COMPLEX_PREPOSITIONS = ("on top of", "on bottom of", "on the left", "on the right", "next to", "on side of", "near")
SPACY_MODEL = "en_core_web_sm"
INSTALL_HINT = "pip install -e '.[paper]' && python -m spacy download en_core_web_sm"


@dataclass(frozen=True)
class Token:
    """A word and its universal part of speech (spaCy's ``pos_``: NOUN, PROPN, ADJ, VERB, ...)."""

    text: str
    pos: str


# --------------------------------------------------------------------------------------------
# The benchmark's rules, on tagged tokens
# --------------------------------------------------------------------------------------------


def kept_chunks(chunks: Sequence[str]) -> list[str]:
    """The noun chunks B-VQA asks about: all but :data:`DROPPED_CHUNKS`, in order."""
    return [c for c in chunks if c not in DROPPED_CHUNKS]


def first_and_last_noun(tokens: Sequence[Token]) -> tuple[str | None, str | None]:
    """The spatial category's two objects: the first and the last NOUN (None, None without one;
    the benchmark's script stops with an IndexError there)."""
    nouns = [t.text for t in tokens if t.pos == "NOUN"]
    return (nouns[0], nouns[-1]) if nouns else (None, None)


def _preposition_width(tokens: Sequence[Token], i: int) -> int:
    """How many tokens from ``i`` spell one of :data:`COMPLEX_PREPOSITIONS` (3, 2, 1; 0: none)."""
    for width in (3, 2, 1):
        if " ".join(t.text for t in tokens[i : i + width]) in COMPLEX_PREPOSITIONS:
            return width
    return 0


def complex_objects(tokens: Sequence[Token]) -> list[str]:
    """Complex mode's objects, in the order found: per preposition, the nearest NOUN or PROPN
    before it, then the first NOUN after it, or where none follows, the first PROPN that is not
    followed by another PROPN. The prompt's two objects when exactly two are found."""
    objects = []
    for i in range(len(tokens)):
        width = _preposition_width(tokens, i)
        if not width:
            continue
        before = next((t.text for t in reversed(tokens[:i]) if t.pos in ("NOUN", "PROPN")), None)
        if before is not None:
            objects.append(before)
        after = tokens[i + width :]
        noun = next((t.text for t in after if t.pos == "NOUN"), None)
        if noun is not None:
            objects.append(noun)
        elif after:  # no NOUN up to the end: a proper name ends the phrase
            name = next((a.text for a, b in zip(after, after[1:]) if a.pos == "PROPN" and b.pos != "PROPN"), None)
            if name is not None:
                objects.append(name)
    return objects


def complex_pair(tokens: Sequence[Token]) -> tuple[str | None, str | None]:
    """The two objects of a complex prompt, or (None, None) unless exactly two are found (its
    spatial score is then 0)."""
    objects = complex_objects(tokens)
    return (objects[0], objects[1]) if len(objects) == 2 else (None, None)


def without_adjectives(tokens: Sequence[Token]) -> str:
    """The prompt 3-in-1's CLIP part scores: every token that is not an ADJ, joined by spaces."""
    return " ".join(t.text for t in tokens if t.pos != "ADJ")


# --------------------------------------------------------------------------------------------
# Readers: spaCy's, or a rule-based fallback with the same interface
# --------------------------------------------------------------------------------------------


class SpacyReader:
    """``tokens(prompt)`` and ``noun_chunks(prompt)`` from a spaCy pipeline (``en_core_web_sm``)."""

    def __init__(self, nlp):
        self.nlp = nlp
        meta = getattr(nlp, "meta", {}) or {}
        self.name = f"spaCy {meta.get('lang', 'en')}_{meta.get('name', 'core_web_sm')} {meta.get('version', '')}".strip()
        self.is_fallback = False

    def tokens(self, prompt: str) -> list[Token]:
        return [Token(t.text, t.pos_) for t in self.nlp(prompt)]

    def noun_chunks(self, prompt: str) -> list[str]:
        return kept_chunks([c.text for c in self.nlp(prompt).noun_chunks])


_DETERMINERS = set("a an the this that these those some each every another any no its his her their my our your".split())
_NUMBERS = set("one two three four five six seven eight nine ten several many few".split())
_PREPOSITIONS = set(("on in of at by with near next to under above below behind beside besides past through across over into onto "
                     "from along around towards toward against between inside outside atop beneath underneath for like as upon "
                     "among amid within without via off up down out about after before during while than").split())
_CONJUNCTIONS = set("and or but nor while whereas".split())
_PRONOUNS = set("it they them he she him we us you i itself themselves".split())
_AUXILIARIES = set("is are was were be been being am has have had does do did can could will would may might must shall should".split())
_VERBS = set((
    "sits sit sat stands stand stood lies lie lay lays rests rest rested hangs hang hung holds hold held runs run ran jumps jump "
    "jumped flies fly flew eats eat ate drinks drink drank plays play played reads read rides ride rode walks walk walked swims "
    "swim swam sleeps sleep slept looks look looked watches watch watched carries carry carried drives drive drove sails sail "
    "sailed chases chase chased grazes graze grazed perches perch perched leans lean leaned floats float floated waits wait "
    "waited shines shine shone glows glow glowed flows flow flowed grows grow grew covers cover covered fills fill filled "
    "contains contain wears wear wore uses use used pulls pull pulled pushes push pushed throws throw threw catches catch caught "
    "kicks kick kicked climbs climb climbed dances dance danced sings sing sang writes write wrote paints paint painted cuts "
    "cut opens open opened closes close closed sparkles sparkle sparkled gleams gleam gleamed dangles dangle dangled sways sway "
    "swayed stretches stretch stretched hovers hover hovered crawls crawl crawled peeks peek peeked decorates decorate "
    "decorated adorns adorn adorned surrounds surround surrounded stares stare stared gazes gaze gazed feeds feed fed "
    "lands land landed passes pass passed sips sip sipped holds cooks cook cooked").split())
_ADJECTIVE_SUFFIXES = ("ful", "ous", "ive", "ic", "al", "able", "ible", "ish", "less", "en", "y", "ed", "ing", "ary", "ant", "ent")
_ADJECTIVES = set((
    "red green blue yellow black white brown pink purple orange gray grey beige golden bright dark light pale big small "
    "large tiny huge little tall short long round square oval rectangular triangular circular cylindrical spherical "
    "cubic conical flat thin thick wide narrow old new young soft hard smooth rough shiny fluffy furry fuzzy wooden "
    "metallic plastic glass leather rubber fabric ceramic velvet silky cozy tidy sleek bulky giant massive modern "
    "antique vintage colorful colourful heavy empty full clean dirty wet dry hot cold warm cool fresh ripe sweet "
    "delicious beautiful pretty cute elegant fancy simple plain sturdy delicate fragile sharp blunt polished rustic "
    "wild tame happy sad angry calm quiet loud busy lazy curly straight striped spotted checkered").split())
_NOUN_EXCEPTIONS = set("glass leather rubber fabric plastic metal wood stone paper ceramic velvet".split())  # nouns used as modifiers


class RuleReader:
    """A spaCy-free reader: parts of speech from word lists and suffixes, noun chunks as the runs of
    determiner / number / adjective / noun words that contain a noun. A fallback for machines
    without spaCy's English model; the columns it feeds say so (``name``)."""

    name = "rule-based fallback (no spaCy)"
    is_fallback = True

    @staticmethod
    def _words(prompt: str) -> list[re.Match]:
        return list(re.finditer(r"[A-Za-z0-9'-]+|[^\sA-Za-z0-9'-]", prompt))

    def tokens(self, prompt: str) -> list[Token]:
        words, tagged = [m.group() for m in self._words(prompt)], []
        for k, word in enumerate(words):
            low, previous = word.lower(), tagged[-1].pos if tagged else None
            following = words[k + 1].lower() if k + 1 < len(words) else ""
            if not re.match(r"[A-Za-z0-9]", word):
                pos = "PUNCT"
            elif low in _DETERMINERS:
                pos = "DET"
            elif low == "next" and following == "to":
                pos = "ADJ"  # spaCy's tag in "next to" (so the benchmark's CLIP prompt loses it)
            elif low in _NUMBERS or low.isdigit():
                pos = "NUM"
            elif low in _CONJUNCTIONS:
                pos = "CCONJ"
            elif low in _PREPOSITIONS:
                pos = "ADP"
            elif low in _PRONOUNS:
                pos = "PRON"
            elif low in _AUXILIARIES:
                pos = "AUX"
            elif low in _VERBS and previous in ("NOUN", "PRON", "PROPN", "ADV", None) and k > 0:
                pos = "VERB"
            elif low.endswith(("ing", "ed")) and previous in ("NOUN", "PRON", "AUX"):
                pos = "VERB"  # "a man wearing a hat", "a cat is sleeping"
            elif low in _ADJECTIVES and low not in _NOUN_EXCEPTIONS and re.match(r"[a-z,]", following):
                pos = "ADJ"
            elif low in _ADJECTIVES and low not in _NOUN_EXCEPTIONS and previous not in ("DET", "ADJ", "NUM"):
                pos = "ADJ"  # "the car is red", "a red, round ball"
            elif low in _NOUN_EXCEPTIONS or low in _ADJECTIVES:
                pos = "NOUN"  # "a red orange": a colour word where a noun must stand
            elif low.endswith("ly") and len(low) > 4:
                pos = "ADV"
            elif low.endswith(_ADJECTIVE_SUFFIXES) and len(low) > 4 and re.match(r"[a-z]", following) and \
                    following not in _PREPOSITIONS | _CONJUNCTIONS | _AUXILIARIES | _DETERMINERS:
                pos = "ADJ"  # a modifier before another word: "a wooden chair", "a sleeping cat"
            else:
                pos = "NOUN"
            tagged.append(Token(word, pos))
        return tagged

    def noun_chunks(self, prompt: str) -> list[str]:
        """Runs of DET / NUM / ADJ / NOUN words ending at a noun; a comma or "and" between two
        modifiers stays inside ("the soft, cozy comfort", "a black and white photo")."""
        spans = [(m.start(), m.end()) for m in self._words(prompt)]
        tokens = self.tokens(prompt)
        chunks, run = [], []  # run: indices into tokens

        def close():
            while run and tokens[run[-1]].pos != "NOUN":  # a chunk ends at its head noun
                run.pop()
            if run:
                chunks.append(prompt[spans[run[0]][0] : spans[run[-1]][1]])
            run.clear()

        for k, token in enumerate(tokens):
            inside = token.pos in ("DET", "NUM", "ADJ", "NOUN")
            if inside and not (token.pos == "DET" and any(tokens[i].pos == "NOUN" for i in run)):
                run.append(k)
                continue
            joins = (token.text == "," or token.text.lower() == "and") and run and tokens[run[-1]].pos == "ADJ" and \
                k + 1 < len(tokens) and tokens[k + 1].pos == "ADJ"
            if joins:
                run.append(k)
                continue
            close()
            if token.pos == "PRON":  # "it", "they": a chunk of their own, as in spaCy
                chunks.append(token.text)
            elif inside:
                run.append(k)
        close()
        return kept_chunks(chunks)


def spacy_available(model: str = SPACY_MODEL) -> bool:
    """Whether spaCy and its English model are installed (nothing is imported)."""
    return importlib.util.find_spec("spacy") is not None and importlib.util.find_spec(model) is not None


def load_reader(kind: str = "auto", model: str = SPACY_MODEL):
    """The reader of prompts: ``"spacy"`` (spaCy's ``en_core_web_sm``, as the benchmark; one-line
    error naming the install command where it is missing), ``"rules"`` (:class:`RuleReader`) or
    ``"auto"`` (spaCy where installed, else the fallback, with a logged note)."""
    if kind not in ("auto", "spacy", "rules"):
        raise ValueError(f"the noun-chunk reader must be 'auto', 'spacy' or 'rules'; got {kind!r}")
    if kind == "rules" or (kind == "auto" and not spacy_available(model)):
        if kind == "auto":
            log.warning("spaCy's %s is not installed: T2I-CompBench's noun chunks and nouns come from a rule-based fallback "
                        "(its columns say so); for the benchmark's own: %s", model, INSTALL_HINT)
        return RuleReader()
    if not spacy_available(model):
        raise ValueError(f"spaCy's {model} is not installed; T2I-CompBench reads prompts with it: {INSTALL_HINT}")
    import spacy  # deferred: an optional dependency (the 'paper' extra)

    return SpacyReader(spacy.load(model))
