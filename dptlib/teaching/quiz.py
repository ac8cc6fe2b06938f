"""Short quizzes that close the core lessons: 3-5 multiple-choice questions each, answers checked.

A question's right answer is either a fixed letter (a question about the method) or read from a
committed table under ``figures/`` when the notebook is run (a question about what the runs found),
so a quiz cannot go stale when a table changes: ``tests/test_premises.py`` checks that the answers
written in the solution notebooks still equal what the tables say.

In a notebook::

    print(quiz.show("01_probing"))
    quiz.check("01_probing", {1: "b", 2: "c", 3: "a", 4: "b"})
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from dptlib.config import repo_root

VERDICTS = {"a": "holds", "b": "inconclusive", "c": "contradicted"}


def committed_table(name: str) -> pd.DataFrame:
    """A committed table, ``figures/<name>.csv`` (the toy scale's results, whatever scale the notebook runs at)."""
    return pd.read_csv(repo_root() / "figures" / f"{name}.csv")


def seed_verdict(claim_prefix: str, table: str = "seed_claims") -> Callable[[], str]:
    """The letter of a seed-aware claim's verdict (``VERDICTS``), read from ``figures/<table>.csv``."""

    def answer() -> str:
        claims = committed_table(table)
        found = claims[claims["claim"].str.startswith(claim_prefix)]
        if found.empty:
            raise KeyError(f"no claim starting {claim_prefix!r} in figures/{table}.csv")
        verdict = str(found["verdict"].iloc[0])
        return next((letter for letter, name in VERDICTS.items() if verdict.startswith(name)), "?")

    return answer


@dataclass(frozen=True)
class Question:
    text: str
    options: dict[str, str]
    answer: str | Callable[[], str]  # a letter, or a function reading it from a committed table
    why: str  # shown once the answer is right

    def right(self) -> str:
        return self.answer() if callable(self.answer) else self.answer


SEED_VERDICT = dict(VERDICTS)

QUIZZES: dict[str, list[Question]] = {
    "00_toy_world": [
        Question("A caption mined as a 'hard negative' for an image turns out to be true of it. What does that do to an ITM "
                 "accuracy measured with it?",
                 {"a": "nothing: the model still sees a different caption", "b": "it lowers it: a model that is right is scored wrong",
                  "c": "it raises it"},
                 "b", "The model that prefers the true caption over a 'negative' that is also true is counted wrong; the oracle "
                      "checks every negative for that reason."),
        Question("Why does the toy world keep some attribute pairs out of training (the OOD prompts)?",
                 {"a": "to test composition the model has not seen as a whole", "b": "to make training faster",
                  "c": "because the oracle cannot grade them"},
                 "a", "The out-of-distribution set asks for combinations of seen parts, the composition T2I models get wrong."),
        Question("What does the oracle table (blur and noise levels) measure?",
                 {"a": "how fast the oracle is", "b": "how far its exact reading holds on blurred and noisy renders",
                  "c": "how well CLIP matches captions"},
                 "b", "Generated images are not clean renders; the table says how much their grades can be trusted."),
    ],
    "01_probing": [
        Question("What does stage 1 (probing) train?",
                 {"a": "the U-Net and the adapter", "b": "only the adapter and its heads", "c": "LoRA in the U-Net's attention"},
                 "b", "The U-Net stays frozen, so what the adapter finds was already in the features."),
        Question("Why are the toy world's hard negatives checked by the oracle, when App. B.1 takes mined captions as false?",
                 {"a": "to make training faster", "b": "because CLIP cannot embed toy captions",
                  "c": "toy captions are partial and templated, so a caption mined from another image is often true of this one"},
                 "c", "On COCO a caption of another image is almost never true of this one; in the toy world it often is."),
        Question("Over five training seeds, what is the verdict on 'stage-1 DPT matches images and texts better than "
                 "DiffusionITM'? (a: holds, b: inconclusive, c: contradicted)",
                 SEED_VERDICT, seed_verdict("stage-1 DPT matches images and texts better than DiffusionITM"),
                 "Read it in figures/seed_claims.csv (09_results): the interval resamples training runs and test items."),
        Question("This run's Tab. 3 difference to a baseline has a 95 % interval that excludes 0. Is that evidence that DPT "
                 "beats the baseline?",
                 {"a": "yes: the interval excludes 0",
                  "b": "not alone: it resamples test queries of one trained adapter, not training runs",
                  "c": "no: intervals say nothing about differences"},
                 "b", "Another training seed gives another adapter; 09_results' intervals resample both seeds and items."),
    ],
    "02_tuning": [
        Question("What does stage 2 train that stage 1 did not?",
                 {"a": "the text encoder", "b": "LoRA matrices in the U-Net's attention, with the adapter",
                  "c": "the VAE"},
                 "b", "LoRA adds low-rank updates to the U-Net's attention projections; the adapter keeps training."),
        Question("LoRA's B starts at zero. What does the tuned pipeline generate at tuning step 0?",
                 {"a": "exactly the base model's images", "b": "noise", "c": "images chosen by the adapter"},
                 "a", "With B = 0 the update (alpha / r) B A is zero: the U-Net is the base model's."),
        Question("Over five training seeds, what is the verdict on 'DPT (stage 2) improves on the base model, toy-cc (ID)'? "
                 "(a: holds, b: inconclusive, c: contradicted)",
                 SEED_VERDICT, seed_verdict("DPT (stage 2) improves on the base model, toy-cc (ID)"),
                 "Read it in figures/seed_claims.csv (09_results)."),
        Question("The shuffled-pairs control is tuned like DPT. What should it show if the comparison is sound?",
                 {"a": "the same gain as DPT", "b": "no change from the base model", "c": "a larger gain than DPT"},
                 "b", "Its adapter learned no relation between images and texts, so tuning with it must not help."),
    ],
    "03_self_correction": [
        Question("Eq. 9 moves the latent along which gradient?",
                 {"a": "of the denoising loss", "b": "of the adapter's matching score s(z_t, y) with respect to z_t",
                  "c": "of the CLIP score of the final image"},
                 "b", "The adapter scores how well the noisy latent matches the prompt; the step goes uphill on that score."),
        Question("Why is η chosen on validation prompts and not on the test prompts?",
                 {"a": "validation prompts are easier", "b": "choosing on the test prompts would make the test score optimistic",
                  "c": "it is faster"},
                 "b", "A choice made on the items that report the result biases the result."),
        Question("Why compare self-correction with a random step of the same size?",
                 {"a": "to show that the direction of the gradient, not just moving the latent, causes the change",
                  "b": "to make sampling faster", "c": "because the paper does"},
                 "a", "A step of the same norm in a random direction is the control for 'any push changes the image'."),
        Question("Over five training seeds, what is the verdict on 'self-correction improves on DPT, toy-cc (ID)'? "
                 "(a: holds, b: inconclusive, c: contradicted)",
                 SEED_VERDICT, seed_verdict("self-correction improves on DPT, toy-cc (ID)"),
                 "Read it in figures/seed_claims.csv (09_results)."),
    ],
}


def _questions(name: str) -> list[Question]:
    if name not in QUIZZES:
        raise KeyError(f"no quiz {name!r}; quizzes: {sorted(QUIZZES)}")
    return QUIZZES[name]


def show(name: str) -> str:
    """The quiz's questions with their options, as text."""
    lines = []
    for number, question in enumerate(_questions(name), 1):
        lines.append(f"{number}. {question.text}")
        lines += [f"   {letter}) {option}" for letter, option in question.options.items()]
    return "\n".join(lines)


def answers(name: str) -> dict[int, str]:
    """The right letters, those read from committed tables included."""
    return {number: question.right() for number, question in enumerate(_questions(name), 1)}


def check(name: str, given: dict) -> str:
    """One line per question: right (with why), not yet, or not answered; returns the summary line."""
    right = 0
    for number, question in enumerate(_questions(name), 1):
        letter = given.get(number)
        if letter is None:
            print(f"{number}. not answered yet")
        elif str(letter).strip().lower() not in question.options:
            print(f"{number}. {letter!r} is not one of the letters {', '.join(question.options)}")
        elif str(letter).strip().lower() == question.right():
            right += 1
            print(f"{number}. right: {question.why}")
        else:
            print(f"{number}. not yet: reread the section and try another letter")
    return f"{right} of {len(_questions(name))} right"
