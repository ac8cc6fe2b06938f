"""dptlib.official.convert on a synthetic release checkpoint: the official key names and shapes at tiny width.

The adapter's weights are written out key by key as the release names them (not through
OfficialAdapter), the LoRA for every attention of the random toy U-Net; the references below are
plain torch ops, so that the converted model is checked against the release's arithmetic, not
against itself.
"""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from dptlib.method.checkpoint import load_adapter
from dptlib.method.losses import matching_similarity
from dptlib.official.checkpoint import build_adapter, load_official_adapter, read_checkpoint
from dptlib.official.convert import main

D, HEADS, FFN, N, M, CHANNELS, TEXT, CLASSES, ALIGN, ROBERTA = 24, 4, 40, 7, 3, 16, 32, 5, 8, 12
ENCODER_LAYERS, DECODER_LAYERS, RANK = 1, 2, 4  # two decoder layers: matching reads the first, boxes the last


# --------------------------------------------------------------------------------------------
# The synthetic checkpoint
# --------------------------------------------------------------------------------------------
def official_adapter_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Every adapter key of the release's ``DiffQformerCombined`` state dict, random, tiny."""
    g = torch.Generator().manual_seed(seed)
    state = {}

    def linear(name, out, inp):
        state[f"{name}.weight"] = torch.randn(out, inp, generator=g) / math.sqrt(inp)
        state[f"{name}.bias"] = 0.1 * torch.randn(out, generator=g)

    def norm(name):
        state[f"{name}.weight"] = 1 + 0.1 * torch.randn(D, generator=g)
        state[f"{name}.bias"] = 0.1 * torch.randn(D, generator=g)

    def attention(name):
        state[f"{name}.in_proj_weight"] = torch.randn(3 * D, D, generator=g) / math.sqrt(D)
        state[f"{name}.in_proj_bias"] = 0.1 * torch.randn(3 * D, generator=g)
        linear(f"{name}.out_proj", D, D)

    for i in range(ENCODER_LAYERS):
        p = f"transformer.encoder.layers.{i}"
        attention(f"{p}.self_attn")
        linear(f"{p}.linear1", FFN, D), linear(f"{p}.linear2", D, FFN), norm(f"{p}.norm1"), norm(f"{p}.norm2")
    for i in range(DECODER_LAYERS):
        p = f"transformer.decoder.layers.{i}"
        attention(f"{p}.self_attn"), attention(f"{p}.multihead_attn")
        linear(f"{p}.linear1", FFN, D), linear(f"{p}.linear2", D, FFN)
        norm(f"{p}.norm1"), norm(f"{p}.norm2"), norm(f"{p}.norm3")
    norm("transformer.decoder.norm")
    state["query_embed.weight"] = torch.randn(N, D, generator=g)
    state["input_proj.weight"] = torch.randn(D, CHANNELS, 1, 1, generator=g) / math.sqrt(CHANNELS)
    state["input_proj.bias"] = 0.1 * torch.randn(D, generator=g)
    linear("timestep_embedding.time_embedding.linear_1", 4 * D, D)
    linear("timestep_embedding.time_embedding.linear_2", D, 4 * D)
    linear("map_to_clip.0", D, D), linear("map_to_clip.2", TEXT, D)
    state["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    linear("class_embed", CLASSES + 1, D)
    for i, out in enumerate((D, D, 4)):
        linear(f"bbox_embed.layers.{i}", out, D)
    linear("contrastive_align_projection_image", ALIGN, D), linear("contrastive_align_projection_text", ALIGN, ROBERTA)
    return state


def attention_projections(unet):
    """{attention path: {"to_q": Linear, ..., "to_out": Linear}} for every attention processor."""
    found = {}
    for name in unet.attn_processors:
        attn = unet.get_submodule(name.removesuffix(".processor"))
        found[name.removesuffix(".processor")] = {"to_q": attn.to_q, "to_k": attn.to_k, "to_v": attn.to_v, "to_out": attn.to_out[0]}
    return found


def official_lora_state(unet, seed: int = 1) -> dict[str, torch.Tensor]:
    """diffusers 0.20 LoRAAttnProcessor weights on every attention, as the release saves them."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for path, projections in attention_projections(unet).items():
        for proj, layer in projections.items():
            state[f"unet.{path}.processor.{proj}_lora.down.weight"] = 0.3 * torch.randn(RANK, layer.in_features, generator=g)
            state[f"unet.{path}.processor.{proj}_lora.up.weight"] = 0.3 * torch.randn(layer.out_features, RANK, generator=g)
    return state


@pytest.fixture(scope="module")
def pipe():
    from dptlib.toy.model import build_random_pipeline

    return build_random_pipeline(text_width=TEXT)


@pytest.fixture(scope="module")
def release(pipe, tmp_path_factory):
    """(checkpoint path, its state, the CLI's output folder)."""
    root = tmp_path_factory.mktemp("release")
    state = {**official_lora_state(pipe.unet), **official_adapter_state()}
    torch.save(state, root / "pytorch_model.bin")
    code = main([str(root / "pytorch_model.bin"), str(root / "out"), "--heads", str(HEADS), "--matching-queries", str(M),
                 "--model", "toy"])
    assert code == 0
    return root / "pytorch_model.bin", state, root / "out"


def run_cli(argv, capsys) -> str:
    """The CLI's one-line error for a bad input (exit status 2)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------------------------
# A reference forward of the release's adapter, plain torch ops
# --------------------------------------------------------------------------------------------
def reference_attention(t, name, q, k, v):
    """nn.MultiheadAttention's arithmetic written out: (B, Lq, D), (B, Lk, D), (B, Lk, D) -> (B, Lq, D)."""
    w, b = t[f"{name}.in_proj_weight"], t[f"{name}.in_proj_bias"]
    q, k, v = (x @ w[i * D:(i + 1) * D].T + b[i * D:(i + 1) * D] for i, x in enumerate((q, k, v)))
    split = lambda x: x.reshape(x.shape[0], x.shape[1], HEADS, D // HEADS).transpose(1, 2)  # (B, H, L, D / H)
    weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(D // HEADS), dim=-1)
    out = (weights @ split(v)).transpose(1, 2).reshape(q.shape)
    return out @ t[f"{name}.out_proj.weight"].T + t[f"{name}.out_proj.bias"]


def reference_forward(t, features, timesteps):
    """(matching embeddings (B, M, TEXT) from decoder layer 0, boxes (B, N - M, 4) from the last)."""
    lin = lambda name, x: x @ t[f"{name}.weight"].T + t[f"{name}.bias"]
    ln = lambda name, x: F.layer_norm(x, (D,), t[f"{name}.weight"], t[f"{name}.bias"])
    ffn = lambda p, x: lin(f"{p}.linear2", torch.relu(lin(f"{p}.linear1", x)))
    batch, _, h, w = features.shape
    src = torch.einsum("bchw,dc->bhwd", features, t["input_proj.weight"][:, :, 0, 0]) + t["input_proj.bias"]
    tokens = src.reshape(batch, h * w, D)  # row-major over (y, x), as flatten(2) of (B, D, h, w)
    # DETR's normalised sine: y in the first D / 2 channels, x in the rest; channel c: sin if even else cos
    pos = torch.zeros(h, w, D)
    for c in range(D // 2):
        period = 10000 ** (2 * (c // 2) / (D // 2))
        wave = torch.sin if c % 2 == 0 else torch.cos
        pos[:, :, c] = wave(torch.arange(1, h + 1).float() / (h + 1e-6) * 2 * math.pi / period)[:, None]
        pos[:, :, D // 2 + c] = wave(torch.arange(1, w + 1).float() / (w + 1e-6) * 2 * math.pi / period)[None, :]
    # diffusers Timesteps(D, flip_sin_to_cos=True, downscale_freq_shift=0): [cos, sin] at exp(-ln(1e4) k / (D / 2))
    angles = timesteps.float()[:, None] * torch.exp(-math.log(10000) * torch.arange(D // 2) / (D // 2))
    time = torch.cat([angles.cos(), angles.sin()], -1)
    time = lin("timestep_embedding.time_embedding.linear_2", F.silu(lin("timestep_embedding.time_embedding.linear_1", time)))
    pos = pos.reshape(1, h * w, D) + time[:, None, :]
    x = tokens
    for i in range(ENCODER_LAYERS):
        p = f"transformer.encoder.layers.{i}"
        x = ln(f"{p}.norm1", x + reference_attention(t, f"{p}.self_attn", x + pos, x + pos, x))
        x = ln(f"{p}.norm2", x + ffn(p, x))
    queries = t["query_embed.weight"][None]
    y, outputs = torch.zeros(batch, N, D), []
    for i in range(DECODER_LAYERS):
        p = f"transformer.decoder.layers.{i}"
        y = ln(f"{p}.norm1", y + reference_attention(t, f"{p}.self_attn", y + queries, y + queries, y))
        y = ln(f"{p}.norm2", y + reference_attention(t, f"{p}.multihead_attn", y + queries, x + pos, x))
        y = ln(f"{p}.norm3", y + ffn(p, y))
        outputs.append(ln("transformer.decoder.norm", y))
    matching = lin("map_to_clip.2", torch.relu(lin("map_to_clip.0", outputs[0][:, :M])))
    boxes = outputs[-1][:, M:]
    for i in range(3):
        boxes = lin(f"bbox_embed.layers.{i}", boxes)
        boxes = torch.relu(boxes) if i < 2 else boxes.sigmoid()
    return matching, boxes


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------
def test_the_converted_adapter_scores_as_the_release_computes(release):
    _, state, out = release
    adapter, blocks, meta = load_official_adapter(out / "adapter")
    g = torch.Generator().manual_seed(2)
    features, timesteps = torch.randn(3, CHANNELS, 5, 4, generator=g), torch.tensor([0, 381, 999])
    text = torch.randn(3, TEXT, generator=g)
    with torch.no_grad():
        output = adapter([features], timesteps)
        matching, boxes = reference_forward(state, features, timesteps)
    reference = (F.normalize(matching, dim=-1) * F.normalize(text, dim=-1)[:, None]).sum(-1).max(-1).values
    torch.testing.assert_close(matching_similarity(output.match_embeddings, text), reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.boxes, boxes, atol=1e-5, rtol=1e-5)
    assert output.match_embeddings.shape == (3, M, TEXT) and output.class_logits.shape == (3, N - M, CLASSES + 1)
    no_object = output.class_logits.softmax(-1)[..., -1]  # MDETR's REC score is 1 - p(no object)
    torch.testing.assert_close(output.grounding_logits.sigmoid(), 1 - no_object, atol=1e-5, rtol=1e-5)
    assert blocks == ["up1"] and meta["architecture"] == "official" and meta["model"] == "toy"
    assert meta["adapter"]["heads"] == HEADS and meta["adapter"]["decoder_layers"] == DECODER_LAYERS


def test_the_converted_lora_equals_the_release_lora_math(release, pipe):
    _, state, out = release
    tuned = copy.deepcopy(pipe)
    tuned.load_lora_weights(out / "lora")
    merged = copy.deepcopy(pipe.unet)  # W <- W + up @ down on every projection: the release's scale 1.0, no alpha
    with torch.no_grad():
        for path, projections in attention_projections(merged).items():
            for proj, layer in projections.items():
                up, down = (state[f"unet.{path}.processor.{proj}_lora.{part}.weight"] for part in ("up", "down"))
                layer.weight += up @ down
    g = torch.Generator().manual_seed(3)
    config = pipe.unet.config
    latents = torch.randn(1, config.in_channels, 8, 8, generator=g)  # 8 x 8: three levels of the toy U-Net, and fast
    context = torch.randn(1, 5, config.cross_attention_dim, generator=g)
    t = torch.tensor([700])
    with torch.no_grad():
        lora_out, merged_out, base_out = (u(latents, t, context).sample for u in (tuned.unet, merged, pipe.unet))
    torch.testing.assert_close(lora_out, merged_out, atol=1e-5, rtol=1e-4)
    assert (merged_out - base_out).abs().max() > 1e-2  # the LoRA does change the output
    layout = json.loads((out / "conversion.json").read_text())["lora"]
    assert layout == {"rank": RANK, "alpha": RANK, "scale": 1.0, "modules": 4 * len(attention_projections(pipe.unet))}


def test_convert_then_load_gives_the_same_state_dict(release):
    path, state, out = release
    adapter, _, _ = load_official_adapter(out / "adapter")
    converted = adapter.state_dict()
    official = {k: v for k, v in state.items() if not k.startswith("unet.")}
    assert set(converted) == set(official)
    assert all(torch.equal(converted[k], official[k]) for k in official)
    assert read_checkpoint(path).keys() == state.keys()
    with pytest.raises(ValueError, match="load_official_adapter"):  # the paper adapter's loader refuses it by name
        load_adapter(out / "adapter")


def test_an_extra_or_missing_adapter_key_is_named():
    state = official_adapter_state()
    with pytest.raises(ValueError, match=r"unexpected \['transformer.extra.weight'\]"):
        build_adapter({**state, "transformer.extra.weight": torch.zeros(1)}, HEADS, M)
    del state["transformer.decoder.layers.1.norm3.bias"]
    with pytest.raises(ValueError, match=r"missing \['transformer.decoder.layers.1.norm3.bias'\]"):
        build_adapter(state, HEADS, M)


def test_wrapped_and_prefixed_state_dicts_are_read(tmp_path):
    state = {"module.query_embed.weight": torch.ones(2, 4)}
    torch.save({"state_dict": state, "step": 5}, tmp_path / "wrapped.bin")
    assert list(read_checkpoint(tmp_path / "wrapped.bin")) == ["query_embed.weight"]


class Payload:  # a pickled instance of this class must never be unpickled
    pass


def test_a_pickle_with_a_non_tensor_object_is_refused(tmp_path, capsys):
    torch.save({"query_embed.weight": torch.ones(2, 4), "extra": Payload()}, tmp_path / "bad.bin")
    err = run_cli([str(tmp_path / "bad.bin"), str(tmp_path / "out")], capsys)
    assert "non-tensor object" in err and "Payload" in err
    torch.save({"query_embed.weight": torch.ones(2, 4), "step": 3}, tmp_path / "number.bin")
    assert "entry 'step' is of type int" in run_cli([str(tmp_path / "number.bin"), str(tmp_path / "out")], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.bin", "number.bin"]


def test_the_cli_writes_nothing_on_bad_input(release, tmp_path, capsys):
    path, state, out = release
    assert "no checkpoint file" in run_cli([str(tmp_path / "missing.bin"), str(tmp_path / "out")], capsys)
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    assert "not a torch checkpoint" in run_cli([str(tmp_path / "junk.bin"), str(tmp_path / "out")], capsys)
    torch.save({**state, "unet.conv_in.weight": torch.zeros(1)}, tmp_path / "frozen.bin")
    assert "unknown U-Net key(s) ['unet.conv_in.weight']" in run_cli([str(tmp_path / "frozen.bin"), str(tmp_path / "out")], capsys)
    incomplete = {k: v for k, v in state.items() if not k.endswith("to_v_lora.up.weight")}
    torch.save(incomplete, tmp_path / "incomplete.bin")
    assert "to_v_lora.up" in run_cli([str(tmp_path / "incomplete.bin"), str(tmp_path / "out"), "--heads", str(HEADS)], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frozen.bin", "incomplete.bin", "junk.bin"]
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert "exists" in run_cli([str(path), str(out)], capsys)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
