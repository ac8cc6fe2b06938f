"""TIFA v1.0 (Hu et al. 2023): question answering on the generated image.

Each caption of ``tifa_v1.0_question_answers.json`` comes with questions (``question``,
``choices``, ``answer``, ``element_type``). A VQA model answers each question freely; an answer
that is not one of the choices becomes the nearest choice by SBERT (``all-mpnet-base-v2``: mean
of the token embeddings over the attention mask, L2-normalised); a question is right when that
choice is the answer. A caption's score is its share right, TIFA the mean over captions
(:func:`rules.tifa_summary`), also reported per element type.

The paper used mPLUG-large, which needs modelscope downloads; BLIP VQA stands in here and its
grader column says so ("not the paper's VQA"). It is asked as TIFA's own ``blip-large`` option asks
it: the processor's 384 px, the question as written after [CLS], ``generate(max_length=50)``
(``BlipVqa(image_size=None, first_token="cls")``, :meth:`BlipVqa.answer`). TIFA is x 100, as the
paper prints it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dptlib.evaluation.graders.rules import nearest_choice, tifa_summary
from dptlib.evaluation.graders.vqa import BlipVqa


def sbert_embedder(model, tokenizer, batch_size: int = 64):
    """``embed(texts) -> (n, d)`` array: SBERT's mean pooling over the attention mask, L2-normalised,
    for any transformers encoder (``AutoModel``) and its tokenizer."""

    @torch.no_grad()
    def embed(texts: Sequence[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            inputs = tokenizer(list(texts[i : i + batch_size]), padding=True, truncation=True, return_tensors="pt").to(model.device)
            tokens = model(**inputs)[0]  # (b, L, d)
            mask = inputs["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))

    return embed


def load_questions(path: str | Path) -> pd.DataFrame:
    """TIFA's question file as a table: one row per question (``id`` is the caption id)."""

    return pd.DataFrame(json.loads(Path(path).read_text()))


class Tifa:
    """``question_table(images, items)``: one row per (image, question of its caption), with the
    VQA's free answer, the choice it maps to and ``correct``; ``score(images, items)``: per image,
    ``TIFA`` = its share right. ``items`` needs ``caption_id`` (TIFA's ``id``) and the pairing
    columns. ``summarize(per_image)``: the mean; ``by_type(question_table)``: per element type."""

    column = "TIFA"

    def __init__(self, vqa: BlipVqa, embed, questions: pd.DataFrame, paper_vqa: bool = False, scale: float = 100.0):
        self.vqa, self.embed, self.questions, self.scale = vqa, embed, questions, scale
        self.grader = vqa.name + ("" if paper_vqa else " (not the paper's VQA)")

    def question_table(self, images: Sequence[np.ndarray], items: pd.DataFrame) -> pd.DataFrame:
        if len(images) != len(items):
            raise ValueError(f"{len(images)} images for {len(items)} items")
        rows = []
        for k, item in enumerate(items.reset_index(drop=True).to_dict("records")):
            asked = self.questions[self.questions["id"].astype(str) == str(item["caption_id"])]
            if asked.empty:
                raise ValueError(f"no TIFA questions for caption id {item['caption_id']!r}")
            rows += [{**item, "image": k, "question": q["question"], "choices": list(q["choices"]), "answer": q["answer"],
                      "element_type": q["element_type"]} for q in asked.to_dict("records")]
        table = pd.DataFrame(rows)
        table["free answer"] = self.vqa.answer([images[i] for i in table["image"]], list(table["question"]))
        table["choice"] = [nearest_choice(a, c, self.embed) for a, c in zip(table["free answer"], table["choices"])]
        table["correct"] = table["choice"] == table["answer"]
        return table.assign(grader=self.grader)

    def score(self, images: Sequence[np.ndarray], items: pd.DataFrame) -> pd.DataFrame:
        questions = self.question_table(images, items)
        share = questions.groupby("image")["correct"].mean()
        return items.reset_index(drop=True).assign(**{self.column: self.scale * share.sort_index().to_numpy()}, grader=self.grader)

    def summarize(self, table: pd.DataFrame) -> dict[str, float]:
        return {self.column: float(table[self.column].mean())}

    @staticmethod
    def by_type(questions: pd.DataFrame) -> dict:
        """:func:`rules.tifa_summary` over one image per caption or several (an image's questions
        count as its caption's)."""
        rows = questions.assign(caption_id=questions["caption_id"].astype(str) + "/" + questions["image"].astype(str))
        return tifa_summary(rows.to_dict("records"))
