"""Helper of test_probe.py: the first probe step's gradients, as one process or under torchrun.

    python tests/distributed_probe.py OUT.safetensors DATA_DIR
    torchrun --nproc_per_node 2 tests/distributed_probe.py OUT.safetensors DATA_DIR
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
torch.set_num_threads(1)


class _Done(Exception):
    pass


def main(out: str, data_dir: str) -> None:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    from dptlib.method.checkpoint import atomic_save_file
    from dptlib.method.train import ProbeConfig, probe

    from test_probe import tiny_backbone, tiny_data

    accelerator = Accelerator(cpu=True, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])
    backbone = tiny_backbone()
    data_root = Path(data_dir) / f"rank{accelerator.process_index}"  # each process writes its own copy
    data = tiny_data(data_root)

    def save(step, adapter):
        if accelerator.is_main_process:
            atomic_save_file({n: p.grad.clone() for n, p in adapter.named_parameters() if p.grad is not None}, out)
        raise _Done

    try:
        probe(ProbeConfig.preset("smoke", batch_size=4), data, Path(data_dir) / "run", backbone=backbone,
              accelerator=accelerator, progress=False, on_gradients=save)
    except _Done:
        pass


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
