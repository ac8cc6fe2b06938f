"""CLIP embedders: ``embed(images, texts)`` for any open_clip model (hard-negative mining, CLIP
scores), an OpenCLIP model named by a spec, and a saved OpenCLIP folder (the toy evaluator).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from dptlib.config import TOY_EVALUATOR_DIR


def clip_embedder(model, tokenizer, image_transform=None, batch: int = 256):
    """``embed(images, texts) -> (image_emb, text_emb)``, normalised, for any open_clip model.

    ``tokenizer`` is open_clip's (returns ids) or a Hugging Face tokenizer (the toy evaluator's);
    ``image_transform`` maps (B, 3, H, W) in [-1, 1] to the model's input (e.g. resize to 224 and
    CLIP-normalise for OpenCLIP ViT-H-14; the toy evaluator takes the images as they are)."""

    def ids(texts):
        if hasattr(tokenizer, "model_max_length"):
            return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                             return_tensors="pt").input_ids
        return tokenizer(texts)

    @torch.no_grad()
    def embed(images, texts):
        image_emb = torch.cat([
            F.normalize(model.encode_image(image_transform(images[i : i + batch]) if image_transform else images[i : i + batch]), dim=-1)
            for i in range(0, len(images), batch)
        ]) if images is not None else None
        text_emb = torch.cat([F.normalize(model.encode_text(ids(texts[i : i + batch])), dim=-1) for i in range(0, len(texts), batch)]) \
            if texts is not None else None
        return image_emb, text_emb

    return embed



def open_clip_embedder(spec: str, device: str | torch.device = "cpu"):
    """:func:`clip_embedder` of an OpenCLIP model named ``"open_clip:<architecture>:<checkpoint>"``,
    e.g. ``open_clip:ViT-H-14:/models/open_clip_vit_h14.bin`` (the checkpoint a local file, or a
    tag such as ``laion2b_s32b_b79k`` that open_clip finds in its cache), with the model's own
    resize and normalisation."""
    import open_clip  # deferred: heavy

    kind, _, rest = spec.partition(":")
    architecture, _, checkpoint = rest.partition(":")
    if kind != "open_clip" or not architecture or not checkpoint:
        raise ValueError(f"an evaluator is 'open_clip:<architecture>:<checkpoint>', got {spec!r}")
    model = open_clip.create_model(architecture, pretrained=checkpoint, device=device)
    size = model.visual.image_size if isinstance(model.visual.image_size, int) else model.visual.image_size[0]
    mean = torch.tensor(getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)

    def transform(images):  # [-1, 1] (B, 3, H, W) -> the model's input
        resized = F.interpolate((images + 1) / 2, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        return ((resized - mean) / std).to(device)

    return clip_embedder(model.eval(), open_clip.get_tokenizer(architecture), transform)


def load_evaluator(path: str | Path = TOY_EVALUATOR_DIR):
    """(open_clip model, tokenizer) of the shipped evaluator CLIP, built from its custom config."""
    import open_clip  # deferred: heavy
    from transformers import PreTrainedTokenizerFast  # deferred: heavy

    path = Path(path)
    open_clip.add_model_config(path / "toy_evaluator.json")
    model = open_clip.create_model("toy_evaluator", pretrained=str(path / "open_clip_model.safetensors"))
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path / "tokenizer")
    return model.eval(), tokenizer
