"""``posestream`` subcommands that the ``models`` package brings (registered in setup.cfg)."""
from __future__ import annotations

import sys


def fail(command: str, message: str) -> int:
    """A user error: one line on stderr, exit code 2."""
    print(f"posestream {command}: error: {message}", file=sys.stderr)
    return 2


def model_stats(model) -> dict:
    """Parameters (M) and GFLOPs (2 x multiply-adds, every op torch counts) at the standard input.

    Build the model on the ``meta`` device to count without computing (seconds, not minutes).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in model.parameters())
    device = next(model.parameters()).device
    x = torch.zeros(1, 3, model.input_size, model.input_size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.eval()(x)
    return {"params_m": params / 1e6, "gflops": fc.get_total_flops() / 1e9, "input_size": model.input_size,
            "stride": model.stride, "stages": model.num_stages}
