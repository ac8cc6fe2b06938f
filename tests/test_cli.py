"""The ``dpt`` command: every subcommand reaches its module's ``main``; bad names in one line."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from dptlib import cli


def test_every_subcommand_names_a_module_with_a_main():
    for name, (module, _) in cli.COMMANDS.items():
        assert callable(getattr(importlib.import_module(module), "main", None)), name


def test_listing_and_an_unknown_command(capsys):
    assert cli.main([]) == 0 and "reproduce" in capsys.readouterr().out
    assert cli.main(["reproduse"]) == 2
    assert capsys.readouterr().err.strip().startswith("dpt: unknown command 'reproduse'; one of: reproduce, ablations")


def test_a_subcommand_gets_its_arguments(monkeypatch):
    seen = []
    monkeypatch.setattr(importlib.import_module("dptlib.teaching.exercises"), "main", lambda argv: seen.append(argv) or 0)
    assert cli.main(["exercises", "--check"]) == 0 and seen == [["--check"]]


def test_the_installed_dpt_command_runs():
    script = Path(sys.executable).parent / "dpt"
    if not script.exists():
        pytest.skip("dpt is installed by pip install -e . (make setup)")
    result = subprocess.run([str(script), "reproduce", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--only" in result.stdout and result.stdout.startswith("usage: dpt reproduce")


def test_the_runner_falls_back_to_this_environments_kernel(monkeypatch, caplog):
    import jupyter_client.kernelspec

    from dptlib import config

    monkeypatch.setattr(jupyter_client.kernelspec, "find_kernel_specs", lambda: {"dpt": "/k/dpt", "python3": "/k/python3"})
    assert config.kernel_name() == "dpt"
    monkeypatch.setattr(jupyter_client.kernelspec, "find_kernel_specs", lambda: {"python3": "/k/python3"})
    assert config.kernel_name() == "python3" and "no Jupyter kernel named 'dpt'" in caplog.text


def test_a_failed_notebook_says_its_reason_in_one_line(monkeypatch, capsys, tmp_path):
    import papermill

    from dptlib.experiments import reproduce

    def fail(source, executed, **kwargs):
        raise papermill.PapermillExecutionError(cell_index=3, exec_count=2, source="...", ename="ValueError",
                                                evalue="warmup_steps must be in 0..steps (2); got 50", traceback=["..."])

    monkeypatch.setenv("DPT_RUNS_DIR", str(tmp_path))
    monkeypatch.setattr(papermill, "execute_notebook", fail)
    assert reproduce.main(["--scale", "smoke", "--only", "00_toy_world", "--no-write-back"]) == 1
    said = capsys.readouterr().err.strip().splitlines()
    assert said == [f"[reproduce] 00_toy_world failed: ValueError: warmup_steps must be in 0..steps (2); got 50 (cell [2]); "
                    f"the executed notebook, with the traceback: {tmp_path / 'smoke' / 'notebooks' / '00_toy_world.ipynb'}"]
