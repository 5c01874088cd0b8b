"""Cost of one SCMVP training step, split into forward pass, backward pass and optimiser update, per phase.

Usage::

    python benchmarks/training_step.py                  # snare_cortex.h5mu, minibatches of 64 cells
    python benchmarks/training_step.py --steps 50 --batch-size 128

The minibatches are loaded before timing, so data loading is not counted; the optimiser is the one scvi-tools'
``TrainingPlan`` builds for training. Each phase runs a few untimed warm-up steps first. Writes
``benchmarks/results/training_step_<data>.json`` and the table ``docs/training_step.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("SCMVP_DATA_DIR", ROOT.parent / "shared" / "data")) / "snare_cortex.h5mu"
WARMUP_STEPS = 3


def time_phase(module, optimizer, batches: list[dict]) -> dict[str, float]:
    """Median milliseconds of the forward pass, backward pass and optimiser update over ``batches``."""
    parts: dict[str, list[float]] = {"forward_ms": [], "backward_ms": [], "optimizer_ms": []}
    module.train()
    for step, batch in enumerate(batches):
        start = time.perf_counter()
        _, _, losses = module(batch)
        forward = time.perf_counter()
        optimizer.zero_grad()
        losses.loss.backward()
        backward = time.perf_counter()
        optimizer.step()
        end = time.perf_counter()
        if step >= WARMUP_STEPS:
            for key, seconds in zip(parts, (forward - start, backward - forward, end - backward), strict=True):
                parts[key].append(seconds * 1e3)
    result = {key: round(float(np.median(values)), 1) for key, values in parts.items()}
    result["step_ms"] = round(sum(result.values()), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="paired .h5mu (modalities rna, atac)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per phase")
    parser.add_argument("--n-centroids", type=int, default=15, help="mixture components of the joint phase")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--table", type=Path, default=ROOT / "docs" / "training_step.md")
    args = parser.parse_args()

    import mudata as md
    import scvi
    import torch
    from scvi.train import TrainingPlan

    import scmvp_scvi

    scvi.settings.seed = args.seed
    mdata = md.read_h5mu(args.data)
    scmvp_scvi.SCMVP.setup_mudata(mdata)
    model = scmvp_scvi.SCMVP(mdata, n_centroids=args.n_centroids)
    loader = model._make_data_loader(mdata, batch_size=args.batch_size, shuffle=True)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == WARMUP_STEPS + args.steps:
            break

    def optimizer():
        return TrainingPlan(model.module).configure_optimizers()["optimizer"]

    result = {
        "data": args.data.name,
        "n_cells": mdata.n_obs,
        "n_genes": mdata["rna"].n_vars,
        "n_peaks": mdata["atac"].n_vars,
        "batch_size": args.batch_size,
        "timed_steps": len(batches) - WARMUP_STEPS,
        "scmvp_scvi": scmvp_scvi.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    result["pretraining"] = time_phase(model.module, optimizer(), batches)
    model.initialize_gmm()  # KMeans with n_centroids on the joint latent, as after pretraining
    result["joint"] = time_phase(model.module, optimizer(), batches)

    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"training_step_{args.data.stem}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    write_table(result, args.table)
    print(args.table.read_text())


def write_table(result: dict, path: Path) -> None:
    """The docs page: what was measured, the command, and the median milliseconds of each part."""
    parts = ("forward_ms", "backward_ms", "optimizer_ms", "step_ms")
    rows = "\n".join(
        f"| {phase} | " + " | ".join(str(result[phase][part]) for part in parts) + " |"
        for phase in ("pretraining", "joint")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Cost of a training step\n\n"
        f"One SCMVP training step on {result['data']} ({result['n_cells']:,} cells, {result['n_genes']:,} genes, "
        f"{result['n_peaks']:,} peaks), minibatches of {result['batch_size']} cells, median of "
        f"{result['timed_steps']} steps after warm-up; CPU only ({result['machine']}, {result['torch_threads']} "
        f"threads, torch {result['torch']}), scmvp_scvi {result['scmvp_scvi']}. Data loading is not counted; the "
        "optimiser is the one scvi-tools' `TrainingPlan` builds (fused Adam). Produced by:\n\n"
        "```bash\npython benchmarks/training_step.py\n```\n\n"
        "| phase | forward (ms) | backward (ms) | optimiser (ms) | step (ms) |\n|---|---|---|---|---|\n"
        f"{rows}\n"
    )


if __name__ == "__main__":
    main()
