"""The method on an accelerator: ``DPT_TEST_DEVICE=cuda pytest tests/test_device.py`` (what
``make gpu-check`` runs). On the CPU (CI) the same tests run on the CPU, so they are never skipped
wholesale; each compares the device's result with the CPU's where the two should agree."""

import os

import pytest
import torch

from dptlib.method.adapter import AdapterConfig, DiscriminativeAdapter
from dptlib.method.backbone import Backbone, block_channels, extract_features
from dptlib.method.checkpoint import load_adapter
from dptlib.method.inference import DPTScorer
from dptlib.method.sampling import correction_gradient, generate
from dptlib.method.train import ProbeConfig, TuneConfig, cache_latents, probe, tune

from test_probe import tiny_backbone, tiny_data


@pytest.fixture(scope="module")
def device():
    name = os.environ.get("DPT_TEST_DEVICE", "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.fail(f"DPT_TEST_DEVICE={name} but CUDA is not available")
    return torch.device(name)


def _accelerator(device):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    return Accelerator(cpu=device.type == "cpu", kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def _inputs(device):
    g = torch.Generator().manual_seed(0)
    latents, text = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 16, 32, generator=g)
    return latents.to(device), torch.tensor([10, 700], device=device), text.to(device)


@pytest.mark.parametrize("block", ["down1", "mid", "up1"])
def test_early_exit_features_equal_the_full_forward_on_the_device(device, block):
    backbone = tiny_backbone()
    backbone.pipe.to(device)
    latents, t, text = _inputs(device)
    early = extract_features(backbone.unet, latents, t, text, [block])[0]
    full = extract_features(backbone.unet, latents, t, text, [block], early_exit=False)[0]
    torch.testing.assert_close(early, full, rtol=0, atol=0)
    assert early.device.type == device.type


@pytest.fixture
def exact_float32():
    """fp32 without TF32 (cuDNN convolutions use TF32 by default): the device must then agree
    with the CPU to rounding."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _agree(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    a, b = a.detach().double().cpu().flatten(), b.detach().double().cpu().flatten()
    relative = ((a - b).norm() / b.norm()).item()
    assert relative < 1e-3, f"{what}: relative difference {relative:.2e} between the device and the CPU"


def test_gradient_and_losses_agree_with_the_cpu(device, exact_float32):
    """The self-correction gradient (Eq. 9) and Eq. 8's losses on one septuple batch, computed
    on the CPU and on the device from the same weights and tensors."""
    from dptlib.method.train import DPTModel, StepBatch

    backbone = tiny_backbone()
    unet = backbone.unet
    adapter = DiscriminativeAdapter(AdapterConfig(d_model=32, heads=4, ffn=64, num_queries=6, num_matching_queries=2, dropout=0.0),
                                    [block_channels(unet, "mid")], 32)
    latents, t, text = _inputs("cpu")
    g = torch.Generator().manual_seed(1)
    pooled = torch.randn(2, 32, generator=g)
    batch = StepBatch(latents.repeat(6, 1, 1, 1), t.repeat(6), text.repeat(6, 1, 1), torch.randn(12, 32, generator=g),
                      torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.4, 0.2]]), latents, torch.tensor([0, 6]))
    cpu_gradient = correction_gradient(unet, adapter, ["mid"], latents, t, text, pooled)
    cpu_losses = DPTModel(unet, adapter, ["mid"])(batch)
    backbone.pipe.to(device)
    adapter.to(device)
    on_device = StepBatch(*(x.to(device) if isinstance(x, torch.Tensor) else x for x in vars(batch).values()))
    gradient = correction_gradient(unet, adapter, ["mid"], latents.to(device), t.to(device), text.to(device), pooled.to(device))
    losses = DPTModel(unet, adapter, ["mid"])(on_device)
    _agree(gradient, cpu_gradient, "correction gradient")
    for name in ("matching", "grounding"):
        _agree(losses[name], cpu_losses[name], f"{name} loss")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("device-data"))


def test_probe_and_tune_train_on_the_device_and_save_cpu_loadable_weights(device, data, tmp_path):
    """Both stages on the device, from a backbone loaded on the CPU (moved by probe / tune).
    (Accelerate's state is one per process: a CPU run cannot follow a GPU run here, so the
    numbers are compared with the CPU's in the test above, step by step.)"""
    backbone = tiny_backbone()
    log = probe(ProbeConfig.preset("smoke", steps=2), data, tmp_path / "probe", backbone=backbone, progress=False,
                accelerator=_accelerator(device))["log"]
    assert backbone.device.type == device.type
    assert len(log) == 2 and all(torch.isfinite(torch.tensor(e["loss"])) for e in log)
    adapter, blocks, _ = load_adapter(tmp_path / "probe")  # saved from the device, loaded on the CPU
    assert next(adapter.parameters()).device.type == "cpu"
    result = tune(TuneConfig.preset("smoke", steps=2, validate_every=0, mse_coef=0.5), data, tmp_path / "probe", tmp_path / "tune",
                  backbone=tiny_backbone(), progress=False, accelerator=_accelerator(device))
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in result["log"])
    assert (tmp_path / "tune" / "pytorch_lora_weights.safetensors").exists()


def _probed_on_the_device(device, data, folder):
    """A tiny backbone moved to the device and an adapter probed there, loaded back as a checkpoint
    loads (on the CPU)."""
    backbone = tiny_backbone()
    probe(ProbeConfig.preset("smoke", steps=1), data, folder, backbone=Backbone(backbone.pipe), progress=False,
          accelerator=_accelerator(device))
    adapter, blocks, _ = load_adapter(folder)
    backbone.pipe.to(device)
    return backbone, adapter, blocks


def test_self_corrected_sampling_runs_on_the_device(device, data, tmp_path):
    backbone, adapter, blocks = _probed_on_the_device(device, data, tmp_path)
    kwargs = dict(seed=0, num_inference_steps=2, progress=False)
    plain = generate(backbone.pipe, ["a red circle"], **kwargs)
    # the adapter as a checkpoint loads it, on the CPU: self-correction moves it to the pipeline's device
    corrected = generate(backbone.pipe, ["a red circle"], self_correct=dict(adapter=adapter, blocks=blocks, eta=0.5), **kwargs)
    assert plain.shape == corrected.shape and plain.dtype == corrected.dtype
    assert (plain != corrected).any()


def test_a_cpu_loaded_adapter_scores_with_a_backbone_on_the_device(device, data, tmp_path):
    """What an ablation variant does on a GPU: the adapter read from disk (CPU), the backbone on the device."""
    backbone, adapter, blocks = _probed_on_the_device(device, data, tmp_path)
    scorer = DPTScorer(Backbone(backbone.pipe), adapter, blocks, data, cache_latents(Backbone(backbone.pipe), data.images[:2]))
    assert scorer.score_pairs([0, 1], [0, 0]).shape == (2,)
