"""Checkpoints: safetensors round trips, atomic writes, and a killed loop resumes to the same result."""

import numpy as np
import pytest
import torch

from dptlib.method.checkpoint import atomic_save_file, load_training_state, save_training_state
from dptlib.toy.model import _train


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 1))


def test_training_state_round_trip(tmp_path):
    model, ema = _model(), _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    path = save_training_state(tmp_path / "state.safetensors", model, optimizer, step=7, ema=ema, extra={"log": [[0, 1.5]]})
    fresh, fresh_ema = _model(), _model()
    torch.nn.init.zeros_(fresh[0].weight)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    step, extra = load_training_state(path, fresh, fresh_optimizer, fresh_ema)
    assert step == 7 and extra == {"log": [[0, 1.5]]}
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    state, fresh_state = optimizer.state_dict(), fresh_optimizer.state_dict()
    for k in state["state"]:
        for name, value in state["state"][k].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(fresh_state["state"][k][name]))
    assert [p.name for p in tmp_path.iterdir()] == ["state.safetensors"]  # no temporary file left behind


def test_atomic_save_leaves_old_file_when_writing_fails(tmp_path):
    path = atomic_save_file({"x": torch.ones(2)}, tmp_path / "a.safetensors")
    with pytest.raises((TypeError, AttributeError, ValueError)):
        atomic_save_file({"x": "not a tensor"}, path)
    from safetensors.torch import load_file

    assert torch.equal(load_file(path)["x"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]


class _Killed(Exception):
    pass


def _run(work_dir, kill_at=None, steps_run=None):
    model, ema = _model(), _model()
    data = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))

    def loss_fn(step):  # a batch that depends on the step only, as a resumed run needs
        if steps_run is not None:
            steps_run.append(step)
        if kill_at is not None and step == kill_at:
            raise _Killed
        rng = np.random.default_rng(step)
        x = data[torch.from_numpy(rng.integers(0, 64, 16))]
        return (model(x) - x.sum(1, keepdim=True)).pow(2).mean()

    log = []
    _train("tiny", model, 40, 1e-2, loss_fn, work_dir, every=10, log=log, ema=ema, ema_decay=0.9)
    return model, ema, log


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    straight, straight_ema, straight_log = _run(tmp_path / "a")
    killed_steps, resumed_steps = [], []
    with pytest.raises(_Killed):
        _run(tmp_path / "b", kill_at=25, steps_run=killed_steps)
    assert killed_steps == list(range(26))
    assert (tmp_path / "b" / "tiny.state.safetensors").exists()
    resumed, resumed_ema, resumed_log = _run(tmp_path / "b", steps_run=resumed_steps)
    assert resumed_steps == list(range(20, 40))  # from the step-20 checkpoint on, not from step 0
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    for a, b in zip(straight_ema.state_dict().values(), resumed_ema.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert [s for s, _ in resumed_log] == [s for s, _ in straight_log] == [0, 25]
    assert resumed_log[0][1] == straight_log[0][1]  # step 0's entry came back from the checkpoint


def _tiny_adapter(seed=0):
    from dptlib.method.adapter import AdapterConfig, DiscriminativeAdapter

    torch.manual_seed(seed)
    return DiscriminativeAdapter(AdapterConfig(d_model=32, heads=4, ffn=64, num_queries=6, num_matching_queries=2,
                                               input_norm="batch"), [8, 16], 12).eval()


def test_adapter_round_trips_through_save_pretrained_and_from_pretrained(tmp_path):
    from dptlib.method.adapter import AdapterConfig, DiscriminativeAdapter

    adapter = _tiny_adapter()
    adapter.save_pretrained(tmp_path / "hf")
    loaded = DiscriminativeAdapter.from_pretrained(tmp_path / "hf")
    assert isinstance(loaded.config, AdapterConfig) and loaded.config == adapter.config
    features, t = [torch.randn(2, 8, 4, 4), torch.randn(2, 16, 2, 2)], torch.tensor([10, 500])
    a, b = adapter(features, t), loaded(features, t)
    assert torch.equal(a.match_embeddings, b.match_embeddings) and torch.equal(a.boxes, b.boxes)
    # strict: a file missing a weight is refused
    from safetensors.torch import load_file, save_file

    weights = load_file(tmp_path / "hf" / "adapter.safetensors")
    weights.pop("match_head.weight")
    save_file(weights, tmp_path / "hf" / "adapter.safetensors")
    with pytest.raises(RuntimeError, match="match_head.weight"):
        DiscriminativeAdapter.from_pretrained(tmp_path / "hf")


def test_load_adapter_reads_both_layouts_and_from_pretrained_reads_save_adapters(tmp_path):
    import json
    from dataclasses import asdict
    from types import SimpleNamespace

    from safetensors.torch import save_file

    from dptlib.method.adapter import DiscriminativeAdapter
    from dptlib.method.checkpoint import load_adapter, save_adapter

    adapter = _tiny_adapter(1)
    save_adapter(adapter, SimpleNamespace(model="toy"), ["mid"], tmp_path / "new")
    for loaded in (load_adapter(tmp_path / "new")[0], DiscriminativeAdapter.from_pretrained(tmp_path / "new")):
        assert all(torch.equal(x, y) for x, y in zip(adapter.state_dict().values(), loaded.state_dict().values()))
    _, blocks, meta = load_adapter(tmp_path / "new")
    assert blocks == ["mid"] and meta["adapter"]["input_norm"] == "batch" and meta["model"] == "toy"
    # the layout written before save_pretrained existed: config.json's "adapter" key
    old = tmp_path / "old"
    old.mkdir()
    save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, old / "adapter.safetensors")
    (old / "config.json").write_text(json.dumps({"model": "toy", "blocks": ["up1"], "adapter": asdict(adapter.config),
                                                 "in_channels": [8, 16], "text_dim": 12}))
    loaded, blocks, meta = load_adapter(old)
    assert blocks == ["up1"] and all(torch.equal(x, y) for x, y in zip(adapter.state_dict().values(), loaded.state_dict().values()))


def test_the_official_adapter_round_trips_too(tmp_path):
    from dptlib.official.adapter import OfficialAdapter, OfficialAdapterConfig

    torch.manual_seed(0)
    config = OfficialAdapterConfig(in_channels=8, d_model=32, heads=4, ffn=64, num_queries=6, num_matching_queries=2, text_dim=12)
    adapter = OfficialAdapter(config).eval()
    adapter.save_pretrained(tmp_path)
    loaded = OfficialAdapter.from_pretrained(tmp_path)
    assert loaded.config == config
    assert all(torch.equal(x, y) for x, y in zip(adapter.state_dict().values(), loaded.state_dict().values()))
