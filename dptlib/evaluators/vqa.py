"""BLIP VQA as T2I-CompBench's B-VQA asks it: yes / no probabilities in one decoder step.

transformers' ``BlipForQuestionAnswering.forward`` returns no logits and its ``generate`` masks
nothing in the question (an all-ones mask: wrong for a padded batch), so the three parts are called
here directly:

    pixels (n, 3, S, S) --vision_model--> image tokens (n, P, d)
    question ids (n, L) + mask --text_encoder(cross-attending the image)--> question tokens (n, L, d)
    [decoder start] --text_decoder(cross-attending the question, with its mask)--> logits (n, 1, V)

and p(yes), p(no) are read from the softmax of the first step. T2I-CompBench runs BLIP at 480 px
(the processors' default is 384): ``image_size`` sets it, with ``interpolate_pos_encoding``.

Questions are batched by token length, so that no batch is padded: in transformers 5.24 the BLIP
text model's cross-attention drops the mask it is given (``BlipTextLayer`` passes it as
``attention_mask``, which ``BlipTextSelfAttention`` replaces by its unset ``encoder_attention_mask``),
so the decoder would attend to a shorter question's padding (a test shows the difference).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .rules import MAX_CHUNKS, bvqa_score, rule_noun_chunks, yes_share


class BlipVqa:
    """Yes / no answers of a BLIP VQA model.

    ``model``: a ``BlipForQuestionAnswering``; ``processor``: its ``BlipProcessor``.
    ``first_token``: what the question starts with. "cls" keeps the tokenizer's [CLS] (what
    transformers does); "enc" puts BLIP's [ENC] there, as the original BLIP VQA (and so
    T2I-CompBench) did; it needs the tokenizer to know "[ENC]".
    """

    def __init__(self, model, processor, image_size: int = 480, batch_size: int = 16, first_token: str = "cls", name: str = "blip-vqa"):
        if first_token not in ("cls", "enc"):
            raise ValueError(f"first_token must be 'cls' or 'enc'; got {first_token!r}")
        self.model, self.processor, self.image_size, self.batch_size = model.eval(), processor, image_size, batch_size
        self.first_token, self.name = first_token, name
        tokenizer = processor.tokenizer
        self.yes_no_ids = tokenizer.convert_tokens_to_ids(["yes", "no"])
        if tokenizer.unk_token_id in self.yes_no_ids:
            raise ValueError("the tokenizer has no single token for 'yes' or 'no'")
        self.enc_id = tokenizer.convert_tokens_to_ids("[ENC]") if first_token == "enc" else None
        if first_token == "enc" and self.enc_id == tokenizer.unk_token_id:
            raise ValueError("first_token='enc' needs a tokenizer that knows '[ENC]'")

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "cpu", **kwargs) -> BlipVqa:
        """Model and processor from one local folder (or the HF cache: ``local_files_only``)."""
        from transformers import BlipForQuestionAnswering, BlipProcessor

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
    def answer(self, images: Sequence[np.ndarray], questions: Sequence[str], max_new_tokens: int = 10) -> list[str]:
        """Free-form answers (greedy decoding), for TIFA."""
        answers = [""] * len(questions)
        tokenizer = self.processor.tokenizer
        for chunk in self._buckets(images, questions):
            pixels, text = self._inputs([images[i] for i in chunk], [questions[i] for i in chunk])
            ids = self.model.generate(input_ids=text["input_ids"], pixel_values=pixels, attention_mask=text["attention_mask"],
                                      interpolate_pos_encoding=True, max_new_tokens=max_new_tokens)
            for i, text_ids in zip(chunk, ids):
                answers[i] = tokenizer.decode(text_ids, skip_special_tokens=True).strip()
        return answers

    def _buckets(self, images, questions) -> list[list[int]]:
        """Indices of the questions in batches of equal token length (see the module docstring)."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images for {len(questions)} questions")
        lengths = [len(ids) for ids in self.processor.tokenizer(list(questions))["input_ids"]]
        batches = []
        for length in sorted(set(lengths)):
            same = [i for i, n in enumerate(lengths) if n == length]
            batches += [same[k : k + self.batch_size] for k in range(0, len(same), self.batch_size)]
        return batches

    def _inputs(self, images, questions):
        device = self.model.device
        size = {"height": self.image_size, "width": self.image_size}
        pixels = self.processor.image_processor(list(images), size=size, return_tensors="pt")["pixel_values"].to(device)
        text = self.processor.tokenizer(list(questions), padding=True, return_tensors="pt").to(device)
        if self.enc_id is not None:
            text["input_ids"] = text["input_ids"].clone()
            text["input_ids"][:, 0] = self.enc_id
        return pixels, text

    @torch.no_grad()
    def _batch(self, images, questions) -> np.ndarray:
        device = self.model.device
        pixels, text = self._inputs(images, questions)
        ids = text["input_ids"]
        image_tokens = self.model.vision_model(pixel_values=pixels, interpolate_pos_encoding=True)[0]
        image_mask = torch.ones(image_tokens.shape[:-1], dtype=torch.long, device=device)
        question = self.model.text_encoder(input_ids=ids, attention_mask=text["attention_mask"], encoder_hidden_states=image_tokens,
                                           encoder_attention_mask=image_mask, return_dict=False)[0]
        start = torch.full((len(ids), 1), self.model.decoder_start_token_id, device=device)
        logits = self.model.text_decoder(input_ids=start, encoder_hidden_states=question,
                                         encoder_attention_mask=text["attention_mask"]).logits[:, 0]
        return logits.float().softmax(-1)[:, self.yes_no_ids].cpu().numpy()


class BlipVqaBinding:
    """T2I-CompBench's B-VQA (colour, shape, texture): per image, the product over the prompt's
    noun chunks (at most 8) of p(yes) / (p(yes) + p(no)) for "{chunk}?".

    ``score(images, items)``: ``items`` has one row per image with its ``prompt`` and the columns
    that pair it across methods (e.g. prompt id, seed, method); returns those rows with
    ``B-VQA`` and ``grader``. ``noun_chunks``: the chunker (spaCy's ``noun_chunks`` in the
    benchmark; :func:`rules.rule_noun_chunks` by default, labelled in ``grader``)."""

    column = "B-VQA"

    def __init__(self, vqa: BlipVqa, noun_chunks: Callable[[str], list[str]] = rule_noun_chunks, max_chunks: int = MAX_CHUNKS):
        self.vqa, self.noun_chunks, self.max_chunks = vqa, noun_chunks, max_chunks
        chunker = "rule chunks" if noun_chunks is rule_noun_chunks else getattr(noun_chunks, "__name__", "chunks")
        self.grader = f"{vqa.name} ({chunker})"

    def score(self, images: Sequence[np.ndarray], items: pd.DataFrame) -> pd.DataFrame:
        if len(images) != len(items):
            raise ValueError(f"{len(images)} images for {len(items)} items")
        chunks = [self.noun_chunks(p)[: self.max_chunks] for p in items["prompt"]]
        pairs = [(i, c) for i, cs in enumerate(chunks) for c in cs]  # every question of every image, one batch
        answers = self.vqa.yes_no([images[i] for i, _ in pairs], [f"{c}?" for _, c in pairs])
        shares = [[] for _ in chunks]
        for (i, _), (p_yes, p_no) in zip(pairs, answers):
            shares[i].append(yes_share(float(p_yes), float(p_no)))
        return items.reset_index(drop=True).assign(**{self.column: [bvqa_score(s, self.max_chunks) for s in shares]},
                                                   chunks=[len(c) for c in chunks], grader=self.grader)

    def summarize(self, table: pd.DataFrame) -> dict[str, float]:
        return {self.column: float(table[self.column].mean())}
