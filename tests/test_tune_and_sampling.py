"""Stage 2 (LoRA tuning, diffusers export) and self-correction on a tiny random pipeline."""

import numpy as np
import pytest
import torch

from dptlib.method.checkpoint import load_adapter
from dptlib.method.train import ProbeConfig, TuneConfig, probe, tune
from dptlib.toy.model import load_toy_pipeline

from test_probe import tiny_backbone, tiny_data


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage1")
    backbone, data = tiny_backbone(), tiny_data(root / "data")
    probe(ProbeConfig.preset("smoke", steps=3), data, root / "probe", backbone=backbone, progress=False)
    backbone.pipe.save_pretrained(root / "base")
    return root, data


def test_tuned_lora_round_trips_through_a_stock_pipeline(probed):
    from diffusers import StableDiffusionPipeline

    root, data = probed
    backbone = tiny_backbone()
    scores = []
    result = tune(TuneConfig.preset("smoke", lr=1e-2), data, root / "probe", root / "tuned", backbone=backbone, progress=False,
                  validate=lambda step, model: scores.append(step) or {"score": float(-step)})
    # the start is scored too, but the best of the tuned checkpoints is kept
    assert scores == [0, 2, 4] and result["best"]["step"] == 2
    assert (root / "tuned" / "best" / "pytorch_lora_weights.safetensors").exists()
    latents, t, text = torch.randn(2, 4, 16, 16), torch.tensor([5, 700]), torch.randn(2, 16, 32)
    with torch.no_grad():
        tuned = backbone.unet(latents, t, encoder_hidden_states=text).sample
        pipe = StableDiffusionPipeline.from_pretrained(root / "base")
        base = pipe.unet(latents, t, encoder_hidden_states=text).sample
        pipe.load_lora_weights(root / "tuned")
        loaded = pipe.unet(latents, t, encoder_hidden_states=text).sample
        via_loader = load_toy_pipeline(root / "base", lora=root / "tuned").unet(latents, t, encoder_hidden_states=text).sample
    assert not torch.allclose(base, tuned, atol=1e-6)  # tuning changed the U-Net ...
    torch.testing.assert_close(loaded, tuned, rtol=1e-5, atol=1e-6)  # ... and the stock loader reproduces it
    torch.testing.assert_close(via_loader, tuned, rtol=1e-5, atol=1e-6)  # so does the notebooks' loader


def _snapshot(model):
    """The trainable weights as save_tuned writes them: LoRA (diffusers names) and adapter."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    lora = convert_state_dict_to_diffusers(get_peft_model_state_dict(model.unet))
    return ({k: v.detach().clone() for k, v in lora.items()}, {k: v.detach().clone() for k, v in model.adapter.state_dict().items()})


def _saved(folder):
    from safetensors.torch import load_file

    lora = {k.removeprefix("unet."): v for k, v in load_file(folder / "pytorch_lora_weights.safetensors").items()}
    return lora, load_file(folder / "adapter.safetensors")


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("scores, best_step", [([5, 1, 9, 2, 3], 2), ([9, 3, 1, 5, 2], 3)])
def test_best_holds_the_weights_of_the_best_validated_step(probed, tmp_path, scores, best_step):
    """Non-monotone validation scores: best/ keeps exactly the LoRA + adapter of the best tuned
    step, never the untuned step 0 even where it scores highest; out_dir keeps the last."""
    import json

    root, data = probed
    snapshots = {}

    def validate(step, model):
        snapshots[step] = _snapshot(model)
        return {"score": float(scores[step])}

    result = tune(TuneConfig.preset("smoke", steps=4, validate_every=1, lr=1e-2), data, root / "probe", tmp_path,
                  backbone=tiny_backbone(), progress=False, validate=validate)
    assert sorted(snapshots) == [0, 1, 2, 3, 4]
    assert [v["step"] for v in result["validation"]] == [0, 1, 2, 3, 4]
    assert result["best"]["step"] == best_step and result["best"]["score"] == scores[best_step]
    assert json.loads((tmp_path / "best" / "validation.json").read_text()) == {"score": scores[best_step], "step": best_step}
    lora, adapter = _saved(tmp_path / "best")
    for step, (step_lora, step_adapter) in snapshots.items():  # the steps' weights differ, so only one can match
        assert _same(lora, step_lora) == (step == best_step), step
        assert _same(adapter, step_adapter) == (step == best_step), step
    last_lora, last_adapter = _saved(tmp_path)
    assert _same(last_lora, snapshots[4][0]) and _same(last_adapter, snapshots[4][1])


def test_lora_only_keeps_the_adapter_fixed(probed):
    root, data = probed
    backbone = tiny_backbone()
    tune(TuneConfig.preset("smoke", trainable="lora", objectives="matching", validate_every=0), data, root / "probe",
         root / "lora-only", backbone=backbone, progress=False)
    before, _, _ = load_adapter(root / "probe")
    after, _, _ = load_adapter(root / "lora-only")
    assert all(torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))


def test_mse_term_runs_with_the_full_forward(probed):
    root, data = probed
    result = tune(TuneConfig.preset("smoke", steps=2, mse_coef=0.5, validate_every=0), data, root / "probe", root / "mse",
                  backbone=tiny_backbone(), progress=False)
    assert all("mse" in e and np.isfinite(e["mse"]) for e in result["log"])


def test_a_tuned_adapter_keeps_the_shape_stage_1_gave_it(tmp_path):
    """Stage 2 saves the adapter it loaded; its config.json must describe that adapter (2 layers
    here), not the tune config's default adapter, or loading the tuned folder fails."""
    backbone, data = tiny_backbone(), tiny_data(tmp_path / "data")
    adapter = {**vars(ProbeConfig.preset("smoke").adapter), "encoder_layers": 2, "decoder_layers": 2}
    probe(ProbeConfig.preset("smoke", steps=1, adapter=adapter), data, tmp_path / "probe", backbone=backbone, progress=False)
    tune(TuneConfig.preset("smoke", steps=1, validate_every=0), data, tmp_path / "probe", tmp_path / "tuned", backbone=backbone,
         progress=False)
    tuned, _, meta = load_adapter(tmp_path / "tuned")
    assert meta["adapter"]["encoder_layers"] == 2 and len(tuned.encoder.layers) == 2 and len(tuned.decoder.layers) == 2


def test_mse_only_trains_lora_on_the_denoising_loss_alone(probed):
    """Tab. 5's "MSE only": the DPT losses are logged but not trained on; the loss is the MSE."""
    root, data = probed
    with pytest.raises(ValueError, match="needs mse_coef > 0"):
        TuneConfig.preset("smoke", objectives="none")
    result = tune(TuneConfig.preset("smoke", steps=2, objectives="none", mse_coef=1.0, trainable="lora", validate_every=0), data,
                  root / "probe", root / "mse-only", backbone=tiny_backbone(), progress=False)
    assert all(e["loss"] == pytest.approx(e["mse"], rel=1e-6) and e["matching"] > 0 for e in result["log"])


def test_self_correction_step_raises_the_matching_score(probed):
    from dptlib.method.backbone import encode_text, extract_features
    from dptlib.method.losses import matching_similarity
    from dptlib.method.sampling import correction_gradient

    root, _ = probed
    backbone = tiny_backbone()
    adapter, blocks, _ = load_adapter(root / "probe")
    hidden, pooled = encode_text(backbone, ["a red circle", "two blue squares"])
    z, t = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3)), torch.tensor([400, 400])

    def s(latents):
        with torch.no_grad():
            return matching_similarity(adapter(extract_features(backbone.unet, latents, t, hidden, blocks), t).match_embeddings, pooled)

    gradient = correction_gradient(backbone.unet, adapter, blocks, z, t, hidden, pooled, normalize=True)
    assert (s(z + 0.01 * gradient) > s(z)).all()
    assert (s(z - 0.01 * gradient) < s(z)).all()


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_eta_zero_is_bit_identical_and_eta_changes_images(probed, variant):
    from dptlib.method.sampling import generate

    root, _ = probed
    backbone = tiny_backbone()
    adapter, blocks, _ = load_adapter(root / "probe")
    prompts = ["a red circle", "two blue squares"]
    kwargs = dict(seed=1, num_inference_steps=3, progress=False)
    plain = generate(backbone.pipe, prompts, **kwargs)
    zero = generate(backbone.pipe, prompts, self_correct=dict(adapter=adapter, blocks=blocks, eta=0.0, variant=variant), **kwargs)
    moved = generate(backbone.pipe, prompts, self_correct=dict(adapter=adapter, blocks=blocks, eta=0.5, variant=variant), **kwargs)
    assert np.array_equal(plain, zero)
    assert not np.array_equal(plain, moved)
    again = generate(backbone.pipe, prompts, **kwargs)  # the patch is gone after the call
    assert np.array_equal(plain, again)


def test_the_variants_differ_and_an_unknown_one_is_refused(probed):
    from dptlib.method.sampling import generate, self_correction

    root, _ = probed
    backbone = tiny_backbone()
    adapter, blocks, _ = load_adapter(root / "probe")
    prompts = ["a red circle", "two blue squares"]
    kwargs = dict(seed=1, num_inference_steps=3, progress=False)
    paper, official = (generate(backbone.pipe, prompts, self_correct=dict(adapter=adapter, blocks=blocks, eta=0.5, variant=v), **kwargs)
                       for v in ("paper", "official"))
    assert not np.array_equal(paper, official)
    with pytest.raises(ValueError, match="variant"):
        with self_correction(backbone.pipe, adapter, blocks, prompts, eta=0.5, variant="eq9"):
            pass
    with pytest.raises(ValueError, match="variant"):
        generate(backbone.pipe, prompts, self_correct=dict(adapter=adapter, blocks=blocks, eta=0.5, variant="Paper"), **kwargs)


def test_correction_gradient_is_the_per_sample_gradient_at_unit_rms(probed):
    from dptlib.method.backbone import encode_text, extract_features
    from dptlib.method.losses import matching_similarity
    from dptlib.method.sampling import correction_gradient

    root, _ = probed
    backbone = tiny_backbone()
    adapter, blocks, _ = load_adapter(root / "probe")
    hidden, pooled = encode_text(backbone, ["a red circle", "two blue squares", "a green triangle"])
    z = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([100, 400, 700])
    unet = backbone.unet

    def s(latents):
        with torch.no_grad():
            return matching_similarity(adapter(extract_features(unet, latents, t, hidden, blocks), t).match_embeddings, pooled)

    raw = correction_gradient(unet, adapter, blocks, z, t, hidden, pooled, normalize=False)
    unit = correction_gradient(unet, adapter, blocks, z, t, hidden, pooled, normalize=True)
    rms = raw.pow(2).mean(dim=(1, 2, 3)).sqrt()
    torch.testing.assert_close(unit.pow(2).mean(dim=(1, 2, 3)).sqrt(), torch.ones(3))
    torch.testing.assert_close(unit, raw / rms.view(-1, 1, 1, 1))
    assert not torch.allclose(rms, rms[0].expand(3))  # per sample, not one scale for the batch
    # raw is ds/dz: the central difference along it is its squared norm (float32: 0.1 % here)
    h = 3e-3 / rms.view(-1, 1, 1, 1)
    slope = (s(z + h * raw) - s(z - h * raw)) / (2 * h.flatten())
    torch.testing.assert_close(slope, raw.pow(2).sum(dim=(1, 2, 3)), rtol=2e-2, atol=0)
    # each sample's gradient is its own: the same alone as in the batch
    alone = correction_gradient(unet, adapter, blocks, z[1:2], t[1:2], hidden[1:2], pooled[1:2], normalize=False)
    torch.testing.assert_close(alone[0], raw[1])


def test_self_correction_runs_on_a_half_precision_unet_with_a_float32_adapter(probed):
    """A U-Net loaded in bf16 (as on a GPU, ``torch_dtype=...``) hands bf16 maps to a float32
    adapter: the gradient comes back in the latents' dtype, at unit RMS, pointing where the
    float32 model's does."""
    from dptlib.method.backbone import encode_text
    from dptlib.method.sampling import correction_gradient

    root, _ = probed
    backbone = tiny_backbone()
    adapter, blocks, _ = load_adapter(root / "probe")
    hidden, pooled = encode_text(backbone, ["a red circle", "two blue squares"])
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([200, 600])
    full = correction_gradient(backbone.unet, adapter, blocks, z, t, hidden, pooled)
    half_unet = backbone.unet.to(torch.bfloat16)
    half = correction_gradient(half_unet, adapter, blocks, z.bfloat16(), t, hidden.bfloat16(), pooled.bfloat16())
    assert half.dtype == torch.bfloat16 and adapter.queries.weight.dtype == torch.float32
    torch.testing.assert_close(half.float().pow(2).mean(dim=(1, 2, 3)).sqrt(), torch.ones(2), rtol=1e-2, atol=0)
    cosine = torch.nn.functional.cosine_similarity(half.float().flatten(1), full.flatten(1))
    assert (cosine > 0.9).all(), cosine


class _Spies:
    """What the guided U-Net calls of a pipeline saw: the latents handed to the U-Net (unmoved),
    the latents its first layer actually got (moved), their timestep and text, and the latent the
    scheduler stepped from."""

    def __init__(self, pipe, n, monkeypatch):
        self.given, self.used, self.steps = [], [], []
        self.handles = [
            pipe.unet.register_forward_pre_hook(self._given, with_kwargs=True),
            pipe.unet.conv_in.register_forward_pre_hook(lambda module, args: self.used.append(args[0].detach().clone())
                                                        if len(args[0]) == 2 * n else None),
        ]
        self.n = n
        original = type(pipe.scheduler).step

        def step(scheduler, model_output, timestep, sample, *args, **kwargs):
            self.steps.append(sample.detach().clone())
            return original(scheduler, model_output, timestep, sample, *args, **kwargs)

        monkeypatch.setattr(type(pipe.scheduler), "step", step)

    def _given(self, module, args, kwargs):
        sample = args[0]
        if len(sample) == 2 * self.n:  # the pipeline's guided calls, not the gradient passes
            self.given.append((sample.detach().clone(), args[1], kwargs["encoder_hidden_states"].detach().clone()))

    def remove(self):
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_self_correction_moves_both_guidance_halves_uphill_and_steps_from_the_right_latent(probed, monkeypatch, variant):
    from dptlib.method.backbone import encode_text, extract_features
    from dptlib.method.losses import matching_similarity
    from dptlib.method.sampling import correction_gradient, generate

    root, _ = probed
    backbone = tiny_backbone()
    pipe, unet = backbone.pipe, backbone.unet
    adapter, blocks, _ = load_adapter(root / "probe")
    prompts, eta = ["a red circle", "two blue squares"], 0.02
    n = len(prompts)
    spies = _Spies(pipe, n, monkeypatch)
    try:
        generate(pipe, prompts, seed=2, num_inference_steps=3, progress=False,
                 self_correct=dict(adapter=adapter, blocks=blocks, eta=eta, variant=variant))
    finally:
        spies.remove()
    assert len(spies.given) == len(spies.used) == len(spies.steps) == 3
    with torch.no_grad():
        _, pooled = encode_text(backbone, prompts)
    for (given, t, hidden), used, stepped in zip(spies.given, spies.used, spies.steps):
        assert torch.equal(given[:n], given[n:])  # the pipeline duplicates the latents for guidance ...
        assert torch.equal(used[:n], used[n:])  # ... and both halves are moved alike
        z, cond = given[n:], hidden[n:]
        tt = torch.as_tensor(t).reshape(-1).expand(n)
        gradient = correction_gradient(unet, adapter, blocks, z, tt, cond, pooled, normalize=True)
        torch.testing.assert_close(used[n:], z + eta * gradient, rtol=1e-5, atol=1e-6)  # Eq. 9 on the conditional half

        def s(latents):
            with torch.no_grad():
                return matching_similarity(adapter(extract_features(unet, latents, tt, cond, blocks), tt).match_embeddings, pooled)

        assert (s(used[n:]) > s(z)).all()  # the move raises s(z_t, y)
        assert not torch.equal(used[n:], z)
        if variant == "paper":  # z_{t-1} follows from the moved latent ...
            assert torch.equal(stepped, used[n:])
        else:  # ... or, as released, from the unmoved one
            assert torch.equal(stepped, z)


def test_self_correction_leaves_the_pipeline_as_it_found_it(probed):
    from dptlib.method.sampling import self_correction

    root, _ = probed
    backbone = tiny_backbone()
    pipe = backbone.pipe
    adapter, blocks, _ = load_adapter(root / "probe")
    prompts = ["a red circle"]
    for variant in ("paper", "official"):
        with self_correction(pipe, adapter, blocks, prompts, eta=0.1, variant=variant):
            assert "forward" in vars(pipe.unet)
            assert ("step" in vars(pipe.scheduler)) == (variant == "paper")
        assert "forward" not in vars(pipe.unet) and "step" not in vars(pipe.scheduler), variant
        with pytest.raises(RuntimeError, match="inside"):
            with self_correction(pipe, adapter, blocks, prompts, eta=0.1, variant=variant):
                raise RuntimeError("inside")
        assert "forward" not in vars(pipe.unet) and "step" not in vars(pipe.scheduler), variant
    # wrappers someone else installed on the instances survive the block
    forward, step = pipe.unet.forward, pipe.scheduler.step
    pipe.unet.forward, pipe.scheduler.step = forward, step
    try:
        with self_correction(pipe, adapter, blocks, prompts, eta=0.1, variant="paper"):
            assert pipe.unet.forward is not forward
        assert vars(pipe.unet)["forward"] is forward and vars(pipe.scheduler)["step"] is step
    finally:
        del pipe.unet.forward, pipe.scheduler.step


def test_random_directions_are_unit_rms_and_fixed_per_image():
    from dptlib.method.sampling import random_directions

    one = random_directions((4, 8, 8), seed=3, indices=[0, 1, 2])
    assert one.shape == (3, 4, 8, 8)
    assert one.pow(2).mean(dim=(1, 2, 3)).sqrt() == pytest.approx(torch.ones(3), abs=1e-5)
    assert torch.equal(random_directions((4, 8, 8), seed=3, indices=[2]), one[2:])  # an image's direction is its own
    assert not torch.equal(random_directions((4, 8, 8), seed=4, indices=[0]), one[:1])


def test_the_random_direction_null_moves_images_by_the_same_step_independently_of_the_batch(probed):
    """Self-correction's null control: eta = 0 leaves sampling bit-identical, eta > 0 changes it
    without any gradient, and an image comes out the same whatever batch it is drawn in."""
    from dptlib.method.sampling import generate, self_correction

    root, _ = probed
    backbone = tiny_backbone()
    adapter, blocks, _ = load_adapter(root / "probe")
    prompts = ["a red circle", "two blue squares", "a green triangle"]
    kwargs = dict(seed=1, num_inference_steps=3, progress=False)
    null = dict(adapter=adapter, blocks=blocks, direction="random")
    plain = generate(backbone.pipe, prompts, **kwargs)
    assert np.array_equal(plain, generate(backbone.pipe, prompts, self_correct={**null, "eta": 0.0}, **kwargs))
    moved = generate(backbone.pipe, prompts, self_correct={**null, "eta": 0.5}, **kwargs)
    assert not np.array_equal(plain, moved)
    by_one = generate(backbone.pipe, prompts, self_correct={**null, "eta": 0.5}, batch_size=1, **kwargs)
    np.testing.assert_allclose(by_one.astype(int), moved.astype(int), atol=1)  # (batched float sums may differ in the last bit)
    gradient = generate(backbone.pipe, prompts, self_correct=dict(adapter=adapter, blocks=blocks, eta=0.5), **kwargs)
    assert not np.array_equal(gradient, moved)
    with pytest.raises(ValueError, match="direction"):
        with self_correction(backbone.pipe, adapter, blocks, prompts, eta=0.5, direction="noise"):
            pass


def test_a_named_scheduler_samples_for_one_call_and_leaves_the_pipelines_own(probed):
    from diffusers import DPMSolverMultistepScheduler

    from dptlib.method.sampling import generate, scheduler_named

    backbone = tiny_backbone()
    pipe = backbone.pipe
    own = pipe.scheduler
    prompts = ["a red circle", "two blue squares"]
    kwargs = dict(seed=1, num_inference_steps=3, progress=False)
    plain = generate(pipe, prompts, **kwargs)
    assert np.array_equal(generate(pipe, prompts, scheduler=None, **kwargs), plain)  # None: the pipeline's own
    fast = generate(pipe, prompts, scheduler="dpm++", **kwargs)
    assert pipe.scheduler is own  # back after the call
    assert not np.array_equal(fast, plain)
    # the same images as a pipeline whose scheduler was swapped by hand, from the model's own config
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(own.config)
    try:
        assert np.array_equal(generate(pipe, prompts, **kwargs), fast)
    finally:
        pipe.scheduler = own
    assert scheduler_named(pipe, "dpm++").betas.equal(own.betas)  # the noise schedule stays the model's
    assert scheduler_named(pipe, "ddim").config.num_train_timesteps == own.config.num_train_timesteps
    with pytest.raises(ValueError, match=r"'euler'.*dpm\+\+"):
        generate(pipe, prompts, scheduler="euler", **kwargs)
    assert pipe.scheduler is own


def test_self_correction_works_with_dpm_solver(probed):
    from dptlib.method.sampling import generate

    root, _ = probed
    pipe = tiny_backbone().pipe
    adapter, blocks, _ = load_adapter(root / "probe")
    prompts = ["a red circle", "two blue squares"]
    kwargs = dict(seed=1, num_inference_steps=3, progress=False, scheduler="dpm++")
    plain = generate(pipe, prompts, **kwargs)
    zero = generate(pipe, prompts, self_correct=dict(adapter=adapter, blocks=blocks, eta=0.0), **kwargs)
    moved = generate(pipe, prompts, self_correct=dict(adapter=adapter, blocks=blocks, eta=0.5), **kwargs)
    assert np.array_equal(plain, zero)  # DPM-Solver's model input is the latent itself: the paper variant applies
    assert not np.array_equal(plain, moved)
