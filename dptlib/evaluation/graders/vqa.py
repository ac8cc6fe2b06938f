"""BLIP VQA as T2I-CompBench's B-VQA asks it: yes / no probabilities in one decoder step.

transformers' ``BlipForQuestionAnswering.forward`` returns no logits and its ``generate`` masks
nothing in the question (an all-ones mask: wrong for a padded batch), so the three parts are called
here directly:

    pixels (n, 3, S, S) --vision_model--> image tokens (n, P, d)
    question ids (n, L) + mask --text_encoder(cross-attending the image)--> question tokens (n, L, d)
    [decoder start] --text_decoder(cross-attending the question, with its mask)--> logits (n, 1, V)

and p(yes), p(no) are read from the softmax of the first step. T2I-CompBench runs BLIP at 480 px
(the processors' default is 384): ``image_size`` sets it, with ``interpolate_pos_encoding``. The HF
``capfilt-large`` checkpoint was converted at 384 px (its position embeddings interpolated down from
the original's 480), so at 480 they are interpolated back up: not the original's own 480-px
embeddings, a deviation listed in ``docs/paper-scale.md`` (it needs the weights to measure).

Questions are batched by token length, so that no batch is padded: in transformers 5.24 the BLIP
text model's cross-attention drops the mask it is given (``BlipTextLayer`` passes it as
``attention_mask``, which ``BlipTextSelfAttention`` replaces by its unset ``encoder_attention_mask``),
so the decoder would attend to a shorter question's padding (a test shows the difference).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dptlib.evaluation.graders.rules import MAX_CHUNKS, bvqa_score, yes_share
from dptlib.evaluation.graders.text import RuleReader, load_reader

log = logging.getLogger(__name__)


ORIGINAL_BLIP_VOCAB = 30524  # bert-base-uncased's 30,522 words, then BLIP's [DEC] (30522) and [ENC] (30523)
ORIGINAL_ENC_ID = 30523


def blip_question(question: str, max_words: int = 50) -> str:
    """A question as the original BLIP's VQA data reader passes it (``pre_question``): lower-cased,
    without the characters . ! " ( ) * # : ; ~, trailing spaces removed, at most ``max_words`` words."""
    question = re.sub(r"""([.!\"()*#:;~])""", "", question.lower()).rstrip(" ")
    words = question.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else question


class BlipVqa:
    """Yes / no and free answers of a BLIP VQA model.

    ``model``: a ``BlipForQuestionAnswering``; ``processor``: its ``BlipProcessor``.
    ``image_size``: the side images are resized to (None: the processor's own, 384 for the HF
    checkpoints; T2I-CompBench's BLIP runs at 480, with the position embeddings interpolated).
    ``first_token``: what the question starts with: "cls" keeps the tokenizer's [CLS] (what
    transformers, and so TIFA's BLIP option, does); "enc" puts BLIP's [ENC] there, as the original
    BLIP VQA (and so T2I-CompBench) does: the tokenizer's "[ENC]" where it knows it, else id 30523
    where the text model has the original's 30,524 rows (the original adds [DEC] then [ENC] to
    bert-base-uncased), else an error. ``original_questions``: questions go through
    :func:`blip_question` and are cut at ``max_question_tokens`` (35), as the original reads them.
    """

    def __init__(self, model, processor, image_size: int | None = 480, batch_size: int = 16, first_token: str = "cls",
                 original_questions: bool = False, max_question_tokens: int = 35, name: str = "blip-vqa"):
        if first_token not in ("cls", "enc"):
            raise ValueError(f"first_token must be 'cls' or 'enc'; got {first_token!r}")
        self.model, self.processor, self.image_size, self.batch_size = model.eval(), processor, image_size, batch_size
        self.first_token, self.name = first_token, name
        self.original_questions, self.max_question_tokens = original_questions, max_question_tokens
        tokenizer = processor.tokenizer
        self.yes_no_ids = tokenizer.convert_tokens_to_ids(["yes", "no"])
        if tokenizer.unk_token_id in self.yes_no_ids:
            raise ValueError("the tokenizer has no single token for 'yes' or 'no'")
        self.enc_id = self._enc_id() if first_token == "enc" else None
        native = model.config.vision_config.image_size
        self.interpolate = image_size is not None and image_size != native

    def _enc_id(self) -> int:
        tokenizer = self.processor.tokenizer
        known = tokenizer.convert_tokens_to_ids("[ENC]")
        if known is not None and known != tokenizer.unk_token_id:
            return int(known)
        if self.model.config.text_config.vocab_size == ORIGINAL_BLIP_VOCAB:
            log.info("the tokenizer has no [ENC]: using id %d, the original BLIP's [ENC] row of the text model", ORIGINAL_ENC_ID)
            return ORIGINAL_ENC_ID
        raise ValueError("first_token='enc' needs a tokenizer that knows '[ENC]' or a text model with the original BLIP's "
                         f"{ORIGINAL_BLIP_VOCAB} rows; got {self.model.config.text_config.vocab_size}")

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "cpu", **kwargs) -> BlipVqa:
        """Model and processor from one local folder (or the HF cache: ``local_files_only``)."""
        from transformers import BlipForQuestionAnswering, BlipProcessor  # deferred: heavy

        model = BlipForQuestionAnswering.from_pretrained(folder, local_files_only=True).to(device)
        return cls(model, BlipProcessor.from_pretrained(folder, local_files_only=True), name=Path(str(folder)).name, **kwargs)

    @torch.no_grad()
    def yes_no(self, images: Sequence[np.ndarray], questions: Sequence[str]) -> np.ndarray:
        """(n, 2): p(yes), p(no) for each (image (H, W, 3) uint8, question) pair."""
        answers = np.zeros((len(questions), 2), dtype=np.float32)
        for chunk in self._buckets(images, questions):
            answers[chunk] = self._batch([images[i] for i in chunk], [questions[i] for i in chunk])
        return answers

    @torch.no_grad()
    def answer(self, images: Sequence[np.ndarray], questions: Sequence[str], max_length: int = 50) -> list[str]:
        """Free-form answers (greedy decoding, at most ``max_length`` decoder tokens: TIFA's BLIP
        option calls ``generate(..., max_length=50)``)."""
        answers = [""] * len(questions)
        tokenizer = self.processor.tokenizer
        for chunk in self._buckets(images, questions):
            pixels, text = self._inputs([images[i] for i in chunk], [questions[i] for i in chunk])
            ids = self.model.generate(input_ids=text["input_ids"], pixel_values=pixels, attention_mask=text["attention_mask"],
                                      interpolate_pos_encoding=self.interpolate, max_length=max_length)
            for i, text_ids in zip(chunk, ids):
                answers[i] = tokenizer.decode(text_ids, skip_special_tokens=True).strip()
        return answers

    def _buckets(self, images, questions) -> list[list[int]]:
        """Indices of the questions in batches of equal token length (see the module docstring)."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images for {len(questions)} questions")
        lengths = [len(ids) for ids in self._tokenize(questions)["input_ids"]]
        batches = []
        for length in sorted(set(lengths)):
            same = [i for i, n in enumerate(lengths) if n == length]
            batches += [same[k : k + self.batch_size] for k in range(0, len(same), self.batch_size)]
        return batches

    def _tokenize(self, questions, **kwargs):
        if self.original_questions:
            return self.processor.tokenizer([blip_question(q) for q in questions], truncation=True,
                                            max_length=self.max_question_tokens, **kwargs)
        return self.processor.tokenizer(list(questions), **kwargs)

    def _inputs(self, images, questions):
        device = self.model.device
        size = {} if self.image_size is None else {"size": {"height": self.image_size, "width": self.image_size}}
        pixels = self.processor.image_processor(list(images), return_tensors="pt", **size)["pixel_values"].to(device)
        text = self._tokenize(questions, padding=True, return_tensors="pt").to(device)
        if self.enc_id is not None:
            text["input_ids"] = text["input_ids"].clone()
            text["input_ids"][:, 0] = self.enc_id
        return pixels, text

    @torch.no_grad()
    def _batch(self, images, questions) -> np.ndarray:
        device = self.model.device
        pixels, text = self._inputs(images, questions)
        ids = text["input_ids"]
        image_tokens = self.model.vision_model(pixel_values=pixels, interpolate_pos_encoding=self.interpolate)[0]
        image_mask = torch.ones(image_tokens.shape[:-1], dtype=torch.long, device=device)
        question = self.model.text_encoder(input_ids=ids, attention_mask=text["attention_mask"], encoder_hidden_states=image_tokens,
                                           encoder_attention_mask=image_mask, return_dict=False)[0]
        start = torch.full((len(ids), 1), self.model.decoder_start_token_id, device=device)
        logits = self.model.text_decoder(input_ids=start, encoder_hidden_states=question,
                                         encoder_attention_mask=text["attention_mask"]).logits[:, 0]
        return logits.float().softmax(-1)[:, self.yes_no_ids].cpu().numpy()


class BlipVqaBinding:
    """T2I-CompBench's B-VQA (colour, shape, texture): per image, the product over the prompt's
    noun chunks (at most 8) of p(yes) / (p(yes) + p(no)) for "{chunk}?", each share and the
    product written to 4 decimals as the benchmark's files hold them (:func:`rules.bvqa_score`),
    x ``scale`` (100: the paper prints T2I-CompBench x 100).

    ``score(images, items)``: ``items`` has one row per image with its ``prompt`` and the columns
    that pair it across methods (e.g. prompt id, seed, method); returns those rows with the
    column, ``chunks`` (how many were asked) and ``grader``. ``reader``: where the noun chunks come
    from (:func:`dptlib.evaluation.graders.text.load_reader`: spaCy's ``en_core_web_sm`` as in the
    benchmark, or the rule-based fallback, whose column is then "B-VQA (fallback chunks)")."""

    def __init__(self, vqa: BlipVqa, reader=None, max_chunks: int = MAX_CHUNKS, scale: float = 100.0):
        self.vqa, self.reader, self.max_chunks, self.scale = vqa, reader or load_reader(), max_chunks, scale
        fallback = isinstance(self.reader, RuleReader)
        self.column = "B-VQA (fallback chunks)" if fallback else "B-VQA"
        self.grader = f"{vqa.name} ({self.reader.name})"

    def chunks(self, prompt: str) -> list[str]:
        """The noun chunks asked about, at most ``max_chunks``."""
        return self.reader.noun_chunks(prompt)[: self.max_chunks]

    def score(self, images: Sequence[np.ndarray], items: pd.DataFrame) -> pd.DataFrame:
        if len(images) != len(items):
            raise ValueError(f"{len(images)} images for {len(items)} items")
        chunks = [self.chunks(p) for p in items["prompt"]]
        pairs = [(i, c) for i, cs in enumerate(chunks) for c in cs]  # every question of every image, one batch
        answers = self.vqa.yes_no([images[i] for i, _ in pairs], [f"{c}?" for _, c in pairs])
        shares = [[] for _ in chunks]
        for (i, _), (p_yes, p_no) in zip(pairs, answers):
            shares[i].append(yes_share(float(p_yes), float(p_no)))
        values = [self.scale * bvqa_score(s, self.max_chunks) for s in shares]
        return items.reset_index(drop=True).assign(**{self.column: values}, chunks=[len(c) for c in chunks], grader=self.grader)

    def summarize(self, table: pd.DataFrame) -> dict[str, float]:
        return {self.column: float(table[self.column].mean())}
