"""Training-step benchmark (issue 4): seconds per training step per tile on CPU.

One step = forward + ce_dice loss + backward + AdamW step (lr 1e-3, weight decay 1e-3) on a batch
of random 1-channel tiles with 2 classes. Measured for the default model (Unet +
``tu-convnext_tiny``) and the small test model (Unet + ``tu-resnet10t``), each with
``torch.set_num_threads(1)`` and with 2, all in one run; encoders are randomly initialised (the
cost does not depend on the weights). Reports seconds per tile and per megapixel, the
default/test ratio and the 2-vs-1-thread speed-up.

    python benchmarks/bench_train_step.py [--json results/train_step.json] [--batch 2] [--tile 256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402

MODELS = {"default": "tu-convnext_tiny", "test": "tu-resnet10t"}


def time_steps(encoder: str, *, threads: int, batch: int, tile: int, steps: int) -> float:
    """Median seconds of one training step (after one warm-up step)."""
    import torch

    from scaleseg.models import ModelSpec, build_loss, build_model

    torch.set_num_threads(threads)
    model = build_model(ModelSpec(encoder=encoder, encoder_weights=None), seed=0).train()
    loss_fn = build_loss(n_classes=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, tile, tile, generator=g)
    y = torch.randint(0, 2, (batch, tile, tile), generator=g)
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if i:  # the first step allocates optimiser state and warms kernels
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    args = ap.parse_args()

    mpix_per_tile = args.tile * args.tile / 1e6
    figures: dict = {"batch": args.batch, "tile": args.tile, "timed_steps": args.steps}
    for threads in (1, 2):
        per_tile = {}
        for key, encoder in MODELS.items():
            step = time_steps(
                encoder, threads=threads, batch=args.batch, tile=args.tile, steps=args.steps
            )
            per_tile[key] = step / args.batch
            figures[f"{key}_s_per_step_{threads}t"] = round(step, 3)
            figures[f"{key}_s_per_tile_{threads}t"] = round(per_tile[key], 4)
            figures[f"{key}_s_per_megapixel_{threads}t"] = round(per_tile[key] / mpix_per_tile, 3)
        figures[f"ratio_default_vs_test_{threads}t"] = round(
            per_tile["default"] / per_tile["test"], 2
        )
    for key in MODELS:
        figures[f"{key}_speedup_2t_vs_1t"] = round(
            figures[f"{key}_s_per_tile_1t"] / figures[f"{key}_s_per_tile_2t"], 2
        )
    figures["models"] = {k: f"Unet + {v}" for k, v in MODELS.items()}
    emit("train_step", figures, args.json)


if __name__ == "__main__":
    main()
