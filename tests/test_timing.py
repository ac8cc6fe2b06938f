"""The float-path benchmark's checksum is what a cross-CPU comparison reads, so it must be a
function of the float path alone: the same steps in one process give the same weights. The profile
sums papermill's cell durations by section and estimates an arm from unit costs."""

import pytest
import torch

from dptlib.perf.timing import float_step


def test_float_step_checksum_repeats_on_one_float_path():
    first = float_step(steps=2, septuples=1)
    second = float_step(steps=2, septuples=1)
    assert first["checksum"] == second["checksum"]
    assert first["seconds_per_step"] > 0
    assert first["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_float_step_checksum_sees_a_different_computation():
    # a different seed is different arithmetic: the checksum must tell it apart
    assert float_step(steps=2, septuples=1)["checksum"] != float_step(steps=2, septuples=1, seed=1)["checksum"]


def test_profile_sums_cells_by_section_and_estimates_an_arm(tmp_path):
    import json

    import pandas as pd

    from dptlib.perf import profiling

    cells = [{"cell_type": "code", "source": ["x = 1"], "metadata": {"papermill": {"duration": 1.5}}},
             {"cell_type": "markdown", "source": ["## Stage 1\n", "text"], "metadata": {}},
             {"cell_type": "code", "source": ["probe()"], "metadata": {"papermill": {"duration": 100.0}}},
             {"cell_type": "code", "source": ["plot()"], "metadata": {"papermill": {"duration": 2.0}}},
             {"cell_type": "markdown", "source": ["## Generation"], "metadata": {}},
             {"cell_type": "code", "source": ["generate()"], "metadata": {"papermill": {"duration": 30.0}}}]
    path = tmp_path / "01.ipynb"
    path.write_text(json.dumps({"cells": cells}))
    sections = profiling.notebook_sections(path).set_index("section")["seconds"]
    assert sections.to_dict() == {"(start)": 1.5, "Stage 1": 102.0, "Generation": 30.0}
    costs = pd.DataFrame({"part": [part for part, _, _ in profiling.SEEDS_DPT_ARM], "unit": "x", "seconds": 0.01})
    estimate = profiling.arm_estimate(costs)
    assert estimate["seconds"].sum() == pytest.approx(0.01 * sum(n for _, n, _ in profiling.SEEDS_DPT_ARM))
    assert estimate["share (%)"].sum() == pytest.approx(100)


def test_queries_bench_times_each_query_count_on_one_shared_unet_part(capsys):
    from dptlib.perf.timing import bench_queries

    seconds = bench_queries(counts=(40, 16), repeats=1)
    assert set(seconds) == {40, 16} and all(s > 0 for s in seconds.values())
    out = capsys.readouterr().out
    unet = float(out.split("U-Net part ")[1].split(" s")[0])
    assert all(s > unet for s in seconds.values())  # each step is the shared U-Net part plus its adapter part
    assert " 40 queries:" in out and " 16 queries:" in out


def test_the_jobs_benchmark_times_one_process_then_several_at_once():
    from dptlib.perf.timing import bench_jobs

    result = bench_jobs(2, steps=1)
    assert result["jobs"] == 2 and len(result["together_s"]) == 2 and result["alone_s"] > 0
    assert result["speedup"] == 2 * result["alone_s"] / max(result["together_s"])


def test_float_step_takes_the_query_count():
    assert float_step(steps=1, septuples=1, queries=40)["checksum"] != float_step(steps=1, septuples=1)["checksum"]
