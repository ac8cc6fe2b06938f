"""Tiny random evaluators, written as local folders the real loaders read: dry runs and tests.

A dry run of the paper-scale notebooks (``tests/test_paper_dry_run.py``) needs every grader of
the paper's tables without downloading one. :func:`write_tiny_evaluators` saves a BLIP-2
retrieval model, a BLIP VQA model, a Grounding DINO detector and an MPNet sentence encoder, each
with random weights at a width of 32 and its processor, with ``save_pretrained``; the suite then
loads them with ``from_pretrained(..., local_files_only=True)`` as it loads the real ones. Their
scores mean nothing: they exercise the path from prompt file to table.
"""

from __future__ import annotations

from pathlib import Path

import torch

# one vocabulary for every tiny text model: the special tokens the models need, then words of the benchmarks' prompts
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]", "<s>", "</s>", "yes", "no", ".", "?", "a", "an", "the",
         "and", "of", "on", "in", "with", "left", "right", "top", "bottom", "next", "to", "near", "red", "green", "blue", "yellow",
         "black", "white", "brown", "pink", "purple", "orange", "car", "bench", "dog", "cat", "person", "man", "woman", "table",
         "chair", "bowl", "apple", "book", "bird", "horse", "cup", "plate", "two", "three", "is", "there"]
VISION = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, image_size=32, patch_size=8)


def tokenizer():
    """A BERT tokenizer over :data:`WORDS`, the one vocabulary of every tiny text model (and of the
    random real-size models of ``dptlib.perf.paper_dry_run``: their ids differ from the real tokenizers',
    their cost does not)."""
    from transformers import BertTokenizer  # deferred: heavy

    return BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}, do_lower_case=True)


def blip2() -> tuple:
    """(Blip2ForImageTextRetrieval, Blip2Processor) at width 32, random weights (seed them first)."""
    from transformers import Blip2Config, Blip2ForImageTextRetrieval, Blip2Processor, BlipImageProcessor  # deferred: heavy

    qformer = dict(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                   cross_attention_frequency=1, encoder_hidden_size=32, use_qformer_text_input=True)
    model = Blip2ForImageTextRetrieval(Blip2Config(vision_config=VISION, qformer_config=qformer, num_query_tokens=4,
                                                   image_text_hidden_size=16))
    return model, Blip2Processor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer())


def blip_vqa() -> tuple:
    """(BlipForQuestionAnswering, BlipProcessor) at width 32, random weights; its tokenizer knows [ENC] and [DEC]."""
    from transformers import BlipConfig, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor  # deferred: heavy

    text = dict(vocab_size=len(WORDS), hidden_size=32, encoder_hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=37, bos_token_id=WORDS.index("[DEC]"), sep_token_id=WORDS.index("[SEP]"), pad_token_id=0)
    model = BlipForQuestionAnswering(BlipConfig(text_config=text, vision_config=VISION, projection_dim=16, image_text_hidden_size=16))
    return model, BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer())


def grounding_dino() -> tuple:
    """(GroundingDinoForObjectDetection, GroundingDinoProcessor) at d_model 32, 128 px, random weights."""
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )  # deferred: heavy

    backbone = SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=2, image_size=128,
                          out_features=["stage2", "stage3", "stage4"], out_indices=[2, 3, 4])
    text = BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                      max_position_embeddings=64)
    config = GroundingDinoConfig(backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1, decoder_layers=2,
                                 encoder_ffn_dim=37, decoder_ffn_dim=37, encoder_attention_heads=2, decoder_attention_heads=2,
                                 num_queries=10, use_timm_backbone=False, max_text_len=32, num_feature_levels=3, encoder_n_points=2,
                                 decoder_n_points=2)
    return GroundingDinoForObjectDetection(config), GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 128, "longest_edge": 128}), tokenizer=tokenizer())


def sentence_encoder() -> tuple:
    """(BertModel, BertTokenizer) at width 32, random weights: an SBERT stand-in."""
    from transformers import BertConfig, BertModel  # deferred: heavy

    return BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=37, max_position_embeddings=64)), tokenizer()


BUILDERS = {"blip2": blip2, "vqa": blip_vqa, "detector": grounding_dino, "sentence_encoder": sentence_encoder}


def write_tiny_evaluators(folder: str | Path, seed: int = 0) -> dict[str, str]:
    """Save each tiny random model in ``folder/<name>`` (skipped when it is there); returns the
    ``graders`` mapping (name -> folder) that :meth:`dptlib.evaluation.benchmarks.EvaluatorSuite.from_paths`
    takes, with the toy evaluator CLIP for both CLIP columns."""
    folder = Path(folder)
    paths = {}
    for name, build in BUILDERS.items():
        target = folder / name
        if not (target / "config.json").is_file():
            torch.manual_seed(seed)
            for part in build():  # the model and its processor (or tokenizer), one folder
                part.save_pretrained(target)
        paths[name] = str(target)
    return {"clip": "toy", "clip_b32": "toy", **paths}
