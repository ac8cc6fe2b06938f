"""Tab. 3's zero-shot baselines on hand-made models whose right answer is known: a fake U-Net that
denoises exactly only under one text (or inside one region), a CLIP that sees colours."""

from types import SimpleNamespace

import pytest
import torch

from dptlib.data.discrimination import DiscriminationData
from dptlib.evaluation.baselines import (
    CLIPScorer,
    DenoisingScorer,
    _latent_masks,
    crop_and_resize,
    evenly_spaced_timesteps,
    local_denoising_boxes,
    rec_chance,
)
from dptlib.evaluation.metrics import rec_precision
from dptlib.method.backbone import Backbone, encode_text
from dptlib.toy.model import build_random_pipeline

CAPTIONS = ["a red circle", "a blue square", "two green triangles", "a large red circle"]
EXPRESSIONS = ["the circle on the left", "the square on the right"]
BOX_A, BOX_B = [0.25, 0.5, 0.4, 0.4], [0.75, 0.5, 0.4, 0.4]  # left and right halves of an 8 x 8 latent


class FakeUNet:
    """Predicts the noise that was added to ``clean`` exactly, plus ``offset[text]`` (a scalar or
    an (h, w) map): zero where the text "explains" the image. Records z per timestep."""

    device = torch.device("cpu")

    def __init__(self, scheduler, clean, hidden_of: dict, offset: dict):
        self.alphas, self.clean, self.hidden_of, self.offset = scheduler.alphas_cumprod, clean, hidden_of, offset
        self.seen = {}

    def _text(self, hidden):
        (text,) = [t for t, h in self.hidden_of.items() if torch.equal(h, hidden)]
        return text

    def __call__(self, z, t, encoder_hidden_states):
        a = self.alphas[t].view(-1, 1, 1, 1)
        noise = (z - a.sqrt() * self.clean) / (1 - a).sqrt()
        for row, step in zip(z, t.tolist()):
            self.seen.setdefault(step, []).append(row)
        offsets = torch.stack([torch.as_tensor(self.offset[self._text(h)], dtype=z.dtype).expand(z.shape[-2:])
                               for h in encoder_hidden_states])
        return SimpleNamespace(sample=noise + offsets[:, None])


@pytest.fixture(scope="module")
def pipe():
    return build_random_pipeline()


def _scorer(pipe, offset, normalize, texts):
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden, _ = encode_text(Backbone(pipe), texts)
    fake = FakeUNet(pipe.scheduler, latents[0], dict(zip(texts, hidden)), offset)
    backbone = Backbone(SimpleNamespace(unet=fake, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, scheduler=pipe.scheduler))
    data = DiscriminationData(torch.zeros(1, 3, 16, 16), CAPTIONS, torch.tensor([0, 0, 0, 0]), EXPRESSIONS, torch.tensor([0, 0]),
                              torch.tensor([BOX_A, BOX_B]))
    return DenoisingScorer(backbone, data, latents, evenly_spaced_timesteps(4), normalize=normalize), fake


def test_evenly_spaced_timesteps():
    assert evenly_spaced_timesteps(4).tolist() == [125, 375, 625, 875]


@pytest.mark.parametrize("normalize", [False, True])
def test_denoising_scorer_ranks_the_caption_that_denoises_exactly_first(pipe, normalize):
    offset = {"a red circle": 0.5, "a blue square": 1.0, "two green triangles": 0.0, "a large red circle": 0.3, "": 0.7}
    scorer, fake = _scorer(pipe, offset, normalize, CAPTIONS + [""])
    scores = scorer.score_pairs([0, 0, 0, 0], [0, 1, 2, 3])
    # the error of (x, y) is offset[y]^2 at every timestep; DiffusionITM subtracts that of (x, "")
    expected = torch.tensor([-(offset[c] ** 2) for c in CAPTIONS]) + (offset[""] ** 2 if normalize else 0.0)
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-4)
    assert scores.argmax().item() == 2
    for step, rows in fake.seen.items():  # every candidate (and the empty text) saw the same z_t
        assert all(torch.equal(rows[0], r) for r in rows), step
    assert sorted(fake.seen) == [125, 375, 625, 875]


def test_local_denoising_picks_the_proposal_the_expression_denoises(pipe):
    left = torch.zeros(8, 8)
    left[:, 4:] = 1.0  # exact on the left half only
    offset = {EXPRESSIONS[0]: left, EXPRESSIONS[1]: 1.0 - left}
    scorer, _ = _scorer(pipe, offset, False, EXPRESSIONS)
    assert local_denoising_boxes(scorer, [0, 1]).tolist() == torch.tensor([BOX_A, BOX_B]).tolist()
    assert rec_precision(lambda e: local_denoising_boxes(scorer, e), scorer.data) == 100.0
    swapped, _ = _scorer(pipe, {EXPRESSIONS[0]: 1.0 - left, EXPRESSIONS[1]: left}, False, EXPRESSIONS)
    assert local_denoising_boxes(swapped, [0, 1]).tolist() == torch.tensor([BOX_B, BOX_A]).tolist()


def test_local_denoising_denoises_once_per_expression_and_reads_each_mask(pipe):
    """K proposals' masked errors from one denoising pass equal each mask's own pass: the error
    map of 'exact on the left half' is 0 there and 1 on the right, so a box's error is the share
    of its latent cells on the right half."""
    left = torch.zeros(8, 8)
    left[:, 4:] = 1.0
    scorer, fake = _scorer(pipe, {EXPRESSIONS[0]: left, EXPRESSIONS[1]: 1.0 - left}, False, EXPRESSIONS)
    masks = _latent_masks(torch.tensor([BOX_A, BOX_B, [0.5, 0.5, 1.0, 1.0]]), 8, 8)  # left, right, whole latent
    together = scorer.errors([0], [EXPRESSIONS[0]], masks[None])
    fake.seen.clear()
    alone = torch.stack([scorer.errors([0], [EXPRESSIONS[0]], m[None]) for m in masks], 1)
    assert together.shape == (1, 3) and torch.equal(together, alone)
    torch.testing.assert_close(together[0], torch.tensor([0.0, 1.0, 0.5]), rtol=0, atol=1e-5)
    fake.seen.clear()
    local_denoising_boxes(scorer, [0, 1])
    assert sum(len(rows) for rows in fake.seen.values()) == 2 * 4  # one pass (4 timesteps) per expression, not per proposal


def _colour_image():
    """A red patch left of centre, a blue one above centre: an x/y mix-up crops the other one."""
    image = torch.full((3, 32, 32), -1.0)
    image[0, 13:19, 5:11] = 1.0  # red: x 5-10, y 13-18
    image[2, 5:11, 13:19] = 1.0  # blue: x 13-18, y 5-10
    return image


RED_BOX, BLUE_BOX = [0.25, 0.5, 0.2, 0.2], [0.5, 0.25, 0.2, 0.2]


def colour_embed(images, texts):
    image_emb = None if images is None else torch.nn.functional.normalize(torch.stack(
        [(images[:, 0] + 1).mean((1, 2)), (images[:, 2] + 1).mean((1, 2))], -1) + 1e-6, dim=-1)
    text_emb = None if texts is None else torch.tensor([[1.0, 0.0] if "red" in t else [0.0, 1.0] for t in texts])
    return image_emb, text_emb


def test_crops_are_taken_at_the_box():
    crops = crop_and_resize(_colour_image(), torch.tensor([RED_BOX, BLUE_BOX]))
    assert crops.shape == (2, 3, 32, 32)
    assert crops[0, 0].mean() > 0 and crops[0, 2].max() == -1.0  # mostly red, no blue
    assert crops[1, 2].mean() > 0 and crops[1, 0].max() == -1.0  # mostly blue, no red


def test_clip_scorer_picks_the_crop_the_expression_names():
    data = DiscriminationData(_colour_image()[None], ["a red square and a blue square", "a red square"], torch.tensor([0, 0]),
                              ["the blue square", "the red square", "the red one"], torch.tensor([0, 0, 0]),
                              torch.tensor([BLUE_BOX, RED_BOX, RED_BOX]))
    scorer = CLIPScorer(colour_embed, data)
    assert scorer.predict_boxes([0, 1, 2]).tolist() == torch.tensor([BLUE_BOX, RED_BOX, RED_BOX]).tolist()
    assert rec_precision(scorer.predict_boxes, data) == 100.0
    image_emb, text_emb = colour_embed(data.images[[0, 0]], data.captions)
    torch.testing.assert_close(scorer.score_pairs([0, 0], [0, 1]), (image_emb * text_emb).sum(-1))


def test_rec_chance_is_the_mean_of_one_over_the_proposals():
    boxes = [[0.2, 0.2, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1], [0.3, 0.7, 0.1, 0.1]]
    # image 0: 4 expressions on 3 distinct objects (two name the same one); image 1: 2 on 2
    data = DiscriminationData(torch.zeros(2, 3, 8, 8), ["x", "y"], torch.tensor([0, 1]), ["a", "b", "c", "d", "e", "f"],
                              torch.tensor([0, 0, 0, 0, 1, 1]),
                              torch.tensor([boxes[0], boxes[1], boxes[1], boxes[2], boxes[0], boxes[3]]))
    assert rec_chance(data) == pytest.approx(100 * (4 / 3 + 2 / 2) / 6)
    assert rec_chance(data, [4, 5]) == pytest.approx(50.0)
    assert rec_chance(data, [0]) == pytest.approx(100 / 3)


def test_diffusion_itm_reuses_the_classifiers_errors(pipe):
    """normalized() shares the (image, caption) errors already computed: DiffusionITM on the same
    pairs adds only the unconditional passes, and its scores are the classifier's plus that term."""
    offset = {"a red circle": 0.5, "a blue square": 1.0, "two green triangles": 0.0, "a large red circle": 0.3, "": 0.7}
    classifier, fake = _scorer(pipe, offset, False, CAPTIONS + [""])
    plain = classifier.score_pairs([0, 0, 0, 0], [0, 1, 2, 3])
    calls = sum(len(rows) for rows in fake.seen.values())
    assert calls == 4 * 4  # 4 captions x 4 timesteps
    itm = classifier.normalized().score_pairs([0, 0, 0, 0], [0, 1, 2, 3])
    assert sum(len(rows) for rows in fake.seen.values()) - calls == 4  # the empty text, at 4 timesteps
    torch.testing.assert_close(itm, plain + offset[""] ** 2, rtol=0, atol=1e-4)
    assert classifier.normalize is False  # the twin, not the original, normalises
    again = classifier.score_pairs([0, 0], [2, 1])  # asked again: no new passes
    assert sum(len(rows) for rows in fake.seen.values()) - calls == 4
    torch.testing.assert_close(again, plain[[2, 1]])
