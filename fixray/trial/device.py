"""Where and how the loop computes: the device, the memory order of images, the autocast, the test-pass batch, and a
packed trial's bound on GPU memory."""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from torch import nn

from fixray.crossing.contract import Execution

# Images per forward pass when measuring a test split: large on a GPU; on a CPU, batches past about 128
# spill its caches (measured with small_cnn, one thread: 1024 per pass is 1.4x slower than 128).
EVAL_BATCH = {"cuda": 1024, "cpu": 128}


class Device:
    """Where and how the loop computes: the device, the memory order of images and the autocast it trains under."""

    def __init__(self, device: torch.device | str, execution: Execution) -> None:
        self.device = torch.device(device)
        self.execution = execution.on(self.device.type)
        self.memory_format = torch.channels_last if self.execution.channels_last else torch.contiguous_format

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """A batch in the memory order the weights use (a mismatch would convert it inside every convolution)."""
        return images.contiguous(memory_format=self.memory_format) if images.dim() == 4 else images

    def autocast(self):
        """The autocast forward passes run under: bf16 when asked, else a no-op."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bool(self.execution.bf16))

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        """A numpy array (from Ray's object store: read-only and shared, never written) as a tensor on this device."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.as_tensor(array).to(self.device)

    def eval_batch(self) -> int:
        """Images per forward pass over a test split on this device."""
        return EVAL_BATCH.get(self.device.type, EVAL_BATCH["cuda"])

    def compiled(self, net: nn.Module, distributed: bool) -> nn.Module:
        """The training forward, compiled if asked: with CUDA graphs on a GPU, but not under DDP's hooks."""
        if not self.execution.compile:
            return net
        return torch.compile(net, mode="reduce-overhead" if self.device.type == "cuda" and not distributed else None)


# Set to 1 on machines whose GPUs are declared by hand to test Ray's GPU scheduling without CUDA (the multi-node tests):
# their trials then train on the CPU. Unset, a declared GPU CUDA cannot see is an error.
CPU_FOR_DECLARED_GPUS = "FIXRAY_CPU_FOR_DECLARED_GPUS"


def training_device(gpus: float) -> str:
    """'cuda' for a trial that holds GPUs, else 'cpu'. A node that declares GPUs CUDA cannot see (a wrong torch build, a
    missing driver, a resource declared by hand) is an error naming it, never a silent run on the CPU."""
    if gpus <= 0:
        return "cpu"
    if not torch.cuda.is_available():
        if os.environ.get(CPU_FOR_DECLARED_GPUS) == "1":  # asked for by name: a test of GPU scheduling without one
            return "cpu"
        import ray

        raise RuntimeError(
            f"this trial holds {gpus:g} GPU(s) of the node at {ray.util.get_node_ip_address()}, which declares GPUs "
            f"that CUDA does not see (torch {torch.__version__}, built for CUDA {torch.version.cuda}): give the node a "
            f"CUDA build of torch and its driver, or run the sweep with --gpus-per-trial 0 to train on CPUs"
        )
    return "cuda"


def share_gpu(fraction: float) -> str:
    """Bounds this process to `fraction` of the GPU's memory (packed trials: one's allocation past its share
    fails in that trial alone, never in its neighbours); says what the bound is."""
    torch.cuda.set_per_process_memory_fraction(fraction)
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**30
    return f"GPU memory bound {fraction * total:.1f} GiB ({fraction:g} of {total:.1f} GiB)"
