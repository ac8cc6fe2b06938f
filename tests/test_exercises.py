"""dptlib.teaching.exercises (exercise notebooks cut from solutions) and dptlib.teaching.checks (their checks)."""

import dataclasses
import math

import jupytext
import nbformat
import pytest
import torch

from dptlib.method import losses
from dptlib.teaching import checks as teaching
from dptlib.teaching import exercises
from dptlib.toy.world import ToyWorld, ToyWorldConfig

SOLUTION_PY = '''# %% [markdown]
# An exercise.

# %%
x = 1


def double(v):
    """Twice v."""
    # solution
    return 2 * v


# %%
answer = None
# solution
answer = double(x)

# %% tags=["solution"]
print("the worked answer")
'''


def test_cut_rules_drop_tagged_cells_and_replace_code_after_the_solution_line(tmp_path):
    (tmp_path / "lesson.py").write_text(SOLUTION_PY)
    (tmp_path / "plain.py").write_text("# %%\nprint(1)\n")
    files = exercises.render(tmp_path)
    assert sorted(files) == ["lesson.ipynb", "lesson.py"]  # a notebook without exercises gets none
    notebook = nbformat.reads(files["lesson.ipynb"], as_version=4)
    code = [c.source for c in notebook.cells if c.cell_type == "code"]
    assert code == ['x = 1\n\n\ndef double(v):\n    """Twice v."""\n    # Write your code here.',
                    "answer = None\n# Write your code here."]
    assert "Exercise version of `notebooks/lesson.py`" in notebook.cells[0].source
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")
    # the stub still runs: the function returns None, the answer stays None
    scope = {}
    exec("\n".join(code), scope)
    assert scope["double"](3) is None and scope["answer"] is None
    assert jupytext.reads(files["lesson.py"], fmt="py:percent").cells[2].source == code[0]


def test_drift_names_changed_missing_and_stale_files(tmp_path):
    (tmp_path / "lesson.py").write_text(SOLUTION_PY)
    assert exercises.drift(tmp_path) == ["lesson.ipynb", "lesson.py"]  # nothing written yet
    exercises.write(tmp_path)
    assert exercises.drift(tmp_path) == []
    (tmp_path / "exercises" / "old.py").write_text("# %%\n")
    (tmp_path / "lesson.py").write_text(SOLUTION_PY.replace("x = 1", "x = 2"))
    assert exercises.drift(tmp_path) == ["lesson.ipynb", "lesson.py", "old.py"]
    exercises.write(tmp_path)  # rewrites the changed ones and removes the stale one
    assert exercises.drift(tmp_path) == [] and not (tmp_path / "exercises" / "old.py").exists()


def test_committed_exercise_notebooks_match_their_solutions():
    assert exercises.drift() == [], "notebooks/exercises/ drifted from the solution notebooks: run `make exercises`"


def _swap(spec):
    a, b = spec.objects
    return dataclasses.replace(spec, objects=(dataclasses.replace(a, colour=b.colour), dataclasses.replace(b, colour=a.colour)))


def test_swap_colours_check_passes_the_solution_waits_for_the_stub_and_rejects_a_wrong_answer():
    world = ToyWorld(ToyWorldConfig(seed=0))
    scenes = world.scenes("test", 50)
    assert teaching.check_swap_colours(_swap, world, scenes) == teaching.CORRECT
    assert teaching.check_swap_colours(lambda spec: None, world, scenes) == teaching.NOT_ATTEMPTED
    with pytest.raises(teaching.ExerciseError):
        teaching.check_swap_colours(lambda spec: spec, world, scenes)  # unchanged


def test_the_swaps_that_stay_true_are_same_shape_pairs_without_a_relation(capsys):
    from dptlib.toy.world import score

    world = ToyWorld(ToyWorldConfig(seed=0))
    scenes = world.scenes("test", 50)
    teaching.check_swap_colours(_swap, world, scenes)
    still_true = []
    for scene in scenes:
        image = world.render(scene)
        for spec in world.captions(scene):
            a_b = spec.objects
            if len(a_b) == 2 and None not in (a_b[0].colour, a_b[1].colour) and a_b[0].colour != a_b[1].colour \
                    and score(spec, image, world.config)["correct"] and score(_swap(spec), image, world.config)["correct"]:
                still_true.append(spec)
    assert f"scores {len(still_true)} of" in capsys.readouterr().out
    assert still_true and all(s.objects[0].shape == s.objects[1].shape and s.relation is None for s in still_true)


def _verdict(low, high, p_holm, runs_positive, n_runs, expected_sign):
    needed = math.ceil(0.8 * n_runs)
    for sign, name in ((expected_sign, "holds"), (-expected_sign, "contradicted")):
        on_side = low > 0 if sign > 0 else high < 0
        agreeing = runs_positive if sign > 0 else n_runs - runs_positive
        if on_side and p_holm < 0.05 and agreeing >= needed:
            return name
    return "inconclusive"


def test_verdict_check_passes_the_rule_waits_for_the_stub_and_rejects_a_rule_without_the_seeds():
    assert teaching.check_verdict(_verdict) == teaching.CORRECT
    assert teaching.check_verdict(lambda **case: None) == teaching.NOT_ATTEMPTED
    interval_only = lambda low, high, **rest: "holds" if low > 0 else "inconclusive"  # noqa: E731
    with pytest.raises(teaching.ExerciseError):
        teaching.check_verdict(interval_only)
    outcomes = {_verdict(**case) for case in teaching.verdict_cases()}
    assert outcomes == {"holds", "contradicted", "inconclusive"}  # the cases reach every verdict


def test_matching_score_check_passes_the_solution_waits_for_the_stub_and_rejects_a_mean():
    import torch

    def solution(h, e):
        return torch.nn.functional.cosine_similarity(h, e[:, None, :], dim=-1).max(-1).values

    def mean_over_queries(h, e):  # the mean, not the max, over the M matching queries
        return torch.nn.functional.cosine_similarity(h, e[:, None, :], dim=-1).mean(-1)

    assert teaching.check_matching_score(solution) == teaching.CORRECT
    assert teaching.check_matching_score(lambda h, e: None) == teaching.NOT_ATTEMPTED
    with pytest.raises(teaching.ExerciseError, match="matching score"):
        teaching.check_matching_score(mean_over_queries)


def test_matching_loss_check_passes_the_solution_and_rejects_a_loss_without_the_temperature():
    import torch

    def solution(i2t, t2i, scale):
        return (-torch.log_softmax(scale.exp() * i2t, 1)[:, 0] - torch.log_softmax(scale.exp() * t2i, 1)[:, 0]).mean()

    def without_temperature(i2t, t2i, scale):
        return (-torch.log_softmax(i2t, 1)[:, 0] - torch.log_softmax(t2i, 1)[:, 0]).mean()

    assert teaching.check_matching_loss(solution) == teaching.CORRECT
    assert teaching.check_matching_loss(lambda *args: None) == teaching.NOT_ATTEMPTED
    with pytest.raises(teaching.ExerciseError, match="tau"):
        teaching.check_matching_loss(without_temperature)


def test_paired_difference_check_passes_the_solution_and_rejects_an_unpaired_test():
    import numpy as np
    from scipy.stats import binomtest, fisher_exact

    def solution(base, dpt):
        base, dpt = np.asarray(base, bool), np.asarray(dpt, bool)
        b, c = int((dpt & ~base).sum()), int((base & ~dpt).sum())
        return 100 * (b - c) / len(base), binomtest(b, b + c, 0.5).pvalue if b + c else 1.0

    def unpaired(base, dpt):  # Fisher's test on the two success counts ignores the twins
        base, dpt = np.asarray(base, bool), np.asarray(dpt, bool)
        table = [[dpt.sum(), (~dpt).sum()], [base.sum(), (~base).sum()]]
        return 100 * (dpt.mean() - base.mean()), fisher_exact(table).pvalue

    assert teaching.check_paired_difference(solution) == teaching.CORRECT
    assert teaching.check_paired_difference(lambda base, dpt: None) == teaching.NOT_ATTEMPTED
    with pytest.raises(teaching.ExerciseError, match="McNemar"):
        teaching.check_paired_difference(unpaired)


def test_choose_eta_check_follows_the_data_and_waits_for_the_stub():
    import pandas as pd

    sweep = pd.DataFrame({"method": ["no correction"] * 4 + ["paper, eta 0.03"] * 4 + ["paper, eta 0.1"] * 4 + ["official, eta 0.03"] * 4,
                          "correct": [0, 0, 1, 0] + [1, 1, 0, 1] + [1, 0, 0, 0] + [1, 1, 1, 1]})

    def solution(table):
        paper = table[table["method"].str.startswith("paper, eta ")]
        return float(paper.groupby("method")["correct"].mean().idxmax().split("eta ")[1])

    assert teaching.check_choose_eta(solution, sweep, chosen=0.03) == teaching.CORRECT
    assert teaching.check_choose_eta(lambda table: None, sweep) == teaching.NOT_ATTEMPTED
    with pytest.raises(teaching.ExerciseError, match="expected eta = 0.1"):
        teaching.check_choose_eta(lambda table: 0.03, sweep)  # a constant: right on this sweep, wrong on the moved one
    with pytest.raises(teaching.ExerciseError, match="eta"):  # the official variant's rows are not candidates
        teaching.check_choose_eta(lambda table: float(table.groupby("method")["correct"].mean().drop("no correction").idxmax()
                                                      .split("eta ")[1]), sweep)


BLOCK_ORDER = ["down0", "down1", "down2", "mid", "up0", "up1", "up2"]


def test_blocks_run_check_observes_the_early_exit_and_rejects_the_probed_blocks_alone():
    # what the hooks see: every block up to the last probed one, in execution order
    unet = teaching._toy_unet()
    assert teaching.blocks_run_by_early_exit(unet, ["down1", "up0"]) == BLOCK_ORDER[:5]
    assert teaching.blocks_run_by_early_exit(unet, ["down0"]) == ["down0"]
    assert teaching.check_blocks_run(lambda blocks: BLOCK_ORDER[:BLOCK_ORDER.index(blocks[-1]) + 1]) == teaching.CORRECT
    assert teaching.check_blocks_run(lambda blocks: None) == teaching.NOT_ATTEMPTED
    with pytest.raises(teaching.ExerciseError, match="probing \\['mid'\\] runs"):
        teaching.check_blocks_run(lambda blocks: list(blocks))  # the probed blocks, not what runs before them


def test_lora_count_check_agrees_with_peft_and_rejects_a_square_count():
    assert teaching.lora_parameters_by_peft(64, 32, 4) == 4 * (64 + 32)  # A (4, 64) and B (32, 4), by hand
    assert teaching.check_lora_parameters(lambda d_in, d_out, r: r * (d_in + d_out)) == teaching.CORRECT
    assert teaching.check_lora_parameters(lambda d_in, d_out, r: None) == teaching.NOT_ATTEMPTED
    with pytest.raises(teaching.ExerciseError, match="Linear\\(64, 32\\) at rank 4 gets 384"):
        teaching.check_lora_parameters(lambda d_in, d_out, r: 2 * r * d_in)


def test_holm_check_passes_the_step_down_and_rejects_bonferroni():
    import numpy as np

    def holm(p):  # by hand: sort, multiply the k-th smallest by m - k, carry the running maximum, cap at 1
        order = np.argsort(p)
        adjusted = np.minimum(1, np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p)))))
        out = np.empty_like(adjusted)
        out[order] = adjusted
        return out

    assert np.allclose(holm(np.array([0.01, 0.04, 0.03])), [0.03, 0.06, 0.06])
    assert teaching.check_holm(holm) == teaching.CORRECT
    assert teaching.check_holm(lambda p: None) == teaching.NOT_ATTEMPTED
    with pytest.raises(teaching.ExerciseError, match="Holm"):
        teaching.check_holm(lambda p: np.minimum(1, p * len(p)))  # Bonferroni is not Holm
    assert teaching.p_values(["+2.8 [-0.2, +5.8] (p = 0.07)", "+9.0 [+5.0, +13.0] (p < 0.001)", "—"])[:2] == [0.07, 0.001]


def test_snr_check_reads_the_scheduler_and_rejects_the_noise_share_alone():
    from dptlib.toy.model import build_scheduler

    scheduler = build_scheduler()
    t = torch.tensor([0, 999])
    abar = scheduler.alphas_cumprod[t]
    assert torch.allclose(teaching.snr_from_add_noise(scheduler, t), abar / (1 - abar))
    assert teaching.snr_from_add_noise(scheduler, torch.tensor([999]))[0] < 0.01  # t = 999: almost no signal left
    assert teaching.check_snr(lambda a, steps: a[steps] / (1 - a[steps])) == teaching.CORRECT
    assert teaching.check_snr(lambda a, steps: None) == teaching.NOT_ATTEMPTED
    with pytest.raises(teaching.ExerciseError, match="signal-to-noise"):
        teaching.check_snr(lambda a, steps: a[steps].sqrt() / (1 - a[steps]).sqrt())  # the amplitude ratio, not its square


def test_denoising_check_takes_the_true_pairs_only_and_says_so():
    prediction, noise = torch.zeros(6, 4, 2, 2), torch.ones(1, 4, 2, 2)
    prediction[0] = 1  # the true pair's row predicts its noise exactly: loss 0 on it, 1 on the negatives' rows
    assert losses.denoising_loss(prediction, noise, torch.tensor([0])).item() == 0.0
    assert teaching.check_denoising_loss(lambda p, n, pos: ((p[pos] - n) ** 2).mean()) == teaching.CORRECT
    assert teaching.check_denoising_loss(lambda p, n, pos: None) == teaching.NOT_ATTEMPTED
    with pytest.raises(teaching.ExerciseError, match="only the true pairs' rows count"):
        teaching.check_denoising_loss(lambda p, n, pos: ((p - n.repeat_interleave(p.shape[0] // n.shape[0], 0)) ** 2).mean())


def test_iou_check_passes_the_toy_worlds_iou_and_rejects_intersection_over_the_first_box():
    from dptlib.toy.world import box_iou

    assert teaching.check_iou(box_iou) == teaching.CORRECT
    assert teaching.check_iou(lambda a, b: None) == teaching.NOT_ATTEMPTED
    with pytest.raises(teaching.ExerciseError, match="intersection over union: for boxes"):
        teaching.check_iou(lambda a, b: box_iou(a, b) * 0 + max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
                           / ((a[2] - a[0]) * (a[3] - a[1])))


def test_lora_delta_check_uses_peft_forward_and_rejects_a_delta_without_its_scaling():
    def delta(layer):
        name = layer.active_adapters[0]
        return layer.scaling[name] * layer.lora_B[name].weight @ layer.lora_A[name].weight

    assert teaching.check_lora_delta(delta) == teaching.CORRECT
    assert teaching.check_lora_delta(lambda layer: None) == teaching.NOT_ATTEMPTED
    with pytest.raises(teaching.ExerciseError, match="does not give what peft's forward adds.*without LoRA's scaling alpha / r = 2"):
        teaching.check_lora_delta(lambda layer: layer.lora_B[layer.active_adapters[0]].weight @ layer.lora_A[layer.active_adapters[0]].weight)


def test_unit_rms_check_matches_the_null_directions_and_rejects_a_unit_norm():
    def unit_rms(x):
        return x / x.pow(2).mean(dim=tuple(range(1, x.dim())), keepdim=True).sqrt()

    raw = torch.randn(2, 4, 4, 4)
    assert torch.allclose(unit_rms(raw).pow(2).mean(dim=(1, 2, 3)), torch.ones(2))
    assert teaching.check_unit_rms(unit_rms, cases=[(raw, unit_rms(raw))]) == teaching.CORRECT
    assert teaching.check_unit_rms(lambda x: None) == teaching.NOT_ATTEMPTED
    with pytest.raises(teaching.ExerciseError, match="RMS should be 1"):
        teaching.check_unit_rms(lambda x: x / x.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1)))  # unit norm, not unit RMS


def test_a_correct_answer_passes_in_any_reasonable_type():
    """L_match as a Python float, a numpy number or a 0-d tensor; a paired difference as a tuple,
    a list or an array: each is the same correct answer."""
    import numpy as np

    def loss(i2t, t2i, scale):
        return (-torch.log_softmax(scale.exp() * i2t, 1)[:, 0] - torch.log_softmax(scale.exp() * t2i, 1)[:, 0]).mean()

    for kind in (float, lambda t: np.float32(t.item()), lambda t: t.reshape(1)):
        assert teaching.check_matching_loss(lambda *a, kind=kind: kind(loss(*a))) == teaching.CORRECT

    def paired(base, dpt):
        base, dpt = np.asarray(base, float), np.asarray(dpt, float)
        from dptlib.evaluation.stats import mcnemar_p
        return 100 * float(np.mean(dpt - base)), mcnemar_p(base.astype(bool), dpt.astype(bool))

    for kind in (tuple, list, np.array):
        assert teaching.check_paired_difference(lambda b, d, kind=kind: kind(paired(b, d))) == teaching.CORRECT


def test_a_missing_return_a_wrong_shape_and_a_wrong_value_each_say_so():
    def forgot_return(match_embeddings, text_embeddings):
        scores = (match_embeddings * text_embeddings[:, None]).sum(-1).max(1).values  # noqa: F841 (the exercise's mistake)

    with pytest.raises(teaching.ExerciseError, match="forgot_return returned None: is its `return` missing"):
        teaching.check_matching_score(forgot_return)
    with pytest.raises(teaching.ExerciseError, match=r"expected shape \(2,\), got shape \(2, 1\)"):
        teaching.check_matching_score(lambda z, y: torch.ones(len(z), 1))
    with pytest.raises(teaching.ExerciseError, match="expected numbers of shape"):
        teaching.check_matching_score(lambda z, y: "a string")
    with pytest.raises(teaching.ExerciseError, match=r"for embeddings of shape \(2, 1, 8\): expected"):
        teaching.check_matching_score(lambda z, y: torch.zeros(len(z)))


def test_an_answer_that_calls_the_library_it_should_write_is_refused():
    with pytest.raises(teaching.ExerciseError, match="calls dptlib's matching_similarity"):
        teaching.check_matching_score(lambda z, y: losses.matching_similarity(z, y))
    with pytest.raises(teaching.ExerciseError, match="calls dptlib's matching_loss"):
        teaching.check_matching_loss(lambda a, b, s: losses.matching_loss(a, b, s))
