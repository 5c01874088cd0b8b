"""The default recipe of SCMVP and MULTIVI on one accelerator: time per phase and per step, peak device memory.

Usage::

    python benchmarks/gpu.py                                     # snare_cortex.h5mu on the first CUDA device
    python benchmarks/gpu.py --accelerator cpu --n-cells 600 --epochs 1 --multivi-max-epochs 2 \\
        --out benchmarks/results/smoke                         # smoke test on the CPU (git-ignored output)

SCMVP trains with its default recipe (pretraining, mixture initialisation, joint training; the epochs per phase
chosen from the number of cells unless ``--epochs`` is given), MULTIVI with its own defaults (early stopping on)
capped at ``--multivi-max-epochs`` epochs, as in the CPU comparisons. A callback times every training step with
the device synchronised before each clock reading, so a step's kernels are inside its time and data loading is
not; phases are timed whole (data loading included), and SCMVP's mixture initialisation is the rest of its
``train()``. Peak device memory is ``torch.cuda.max_memory_allocated`` over each model's training. KMeans on each
latent (k = the number of cell types) checks that the models trained. Each model writes its figures to
``<out>/gpu_<data>.json`` as soon as it finishes, so a run cut short keeps them; ``--table`` also writes the table
(``docs/gpu_table.md`` for the docs). On a machine without the project's environment, see
``../shared/docs/gpu.md``.
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


def step_timer(synchronize):
    """A Lightning callback recording each fit's seconds and each training step's milliseconds."""
    from lightning.pytorch.callbacks import Callback

    class StepTimer(Callback):
        def __init__(self):
            self.phases: list[dict] = []

        def on_train_start(self, trainer, pl_module):
            synchronize()
            self.phases.append({"start": time.perf_counter(), "step_ms": []})

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            synchronize()
            self._step_start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            synchronize()
            self.phases[-1]["step_ms"].append((time.perf_counter() - self._step_start) * 1e3)

        def on_train_end(self, trainer, pl_module):
            synchronize()
            phase = self.phases[-1]
            phase["seconds"] = time.perf_counter() - phase.pop("start")
            phase["epochs"] = trainer.current_epoch

    return StepTimer()


def summarise(phase: dict) -> dict:
    """Seconds, epochs, steps and the median step of one fit."""
    steps = phase["step_ms"]
    return {
        "seconds": round(phase["seconds"], 2),
        "epochs": phase["epochs"],
        "steps": len(steps),
        # the first steps of a fit include warm-up (kernel selection, allocator growth)
        "median_step_ms": round(float(np.median(steps[5:] if len(steps) > 10 else steps)), 2),
    }


def kmeans_scores(latent: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    """ARI and NMI of KMeans with k = the number of cell types on a latent."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    k = len(np.unique(labels))
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(latent)
    return {
        "kmeans_ari": round(float(adjusted_rand_score(labels, clusters)), 3),
        "kmeans_nmi": round(float(normalized_mutual_info_score(labels, clusters)), 3),
    }


def run_scmvp(mdata, args, device_kwargs: dict, synchronize, peak_memory) -> dict:
    import scmvp_scvi

    scmvp_scvi.SCMVP.setup_mudata(mdata)
    model = scmvp_scvi.SCMVP(mdata)
    timer = step_timer(synchronize)
    epochs = {} if args.epochs is None else {"max_epochs": args.epochs, "pretrain_epochs": args.epochs}
    start = time.perf_counter()
    model.train(callbacks=[timer], enable_progress_bar=False, **epochs, **device_kwargs)
    synchronize()
    total = time.perf_counter() - start
    pretraining, joint = (summarise(phase) for phase in timer.phases)
    return {
        "train_seconds": round(total, 2),
        "pretraining": pretraining,
        "mixture_initialisation_seconds": round(total - pretraining["seconds"] - joint["seconds"], 2),
        "joint": joint,
        "n_components": int(model.module.n_centroids),
        "peak_device_memory_gb": peak_memory(),
        "latent": model.get_latent_representation(key_added=None),
    }


def run_multivi(mdata, args, device_kwargs: dict, synchronize, peak_memory) -> dict:
    import scvi

    scvi.model.MULTIVI.setup_mudata(mdata, modalities={"rna_layer": "rna", "atac_layer": "atac"})
    model = scvi.model.MULTIVI(mdata)
    timer = step_timer(synchronize)
    start = time.perf_counter()
    model.train(max_epochs=args.multivi_max_epochs, callbacks=[timer], enable_progress_bar=False, **device_kwargs)
    synchronize()
    total = time.perf_counter() - start
    return {
        "train_seconds": round(total, 2),
        "training": summarise(timer.phases[-1]),
        "peak_device_memory_gb": peak_memory(),
        "latent": model.get_latent_representation(),
    }


def render_table(result: dict) -> str:
    """The docs table: one row per model and phase."""

    def memory(figures: dict) -> str:
        return "-" if figures["peak_device_memory_gb"] is None else str(figures["peak_device_memory_gb"])

    rows = []
    scmvp, multivi = result["models"].get("scmvp"), result["models"].get("multivi")
    if scmvp:
        for label, key in (("SCMVP pretraining", "pretraining"), ("SCMVP joint training", "joint")):
            phase = scmvp[key]
            rows.append(f"| {label} | {phase['epochs']} | {phase['seconds']} | {phase['median_step_ms']} | | |")
        rows.append(f"| SCMVP mixture initialisation | | {scmvp['mixture_initialisation_seconds']} | | | |")
        rows.append(
            f"| **SCMVP, all of `train()`** | | **{scmvp['train_seconds']}** | | {memory(scmvp)} | "
            f"{scmvp['kmeans_ari']} / {scmvp['kmeans_nmi']} |"
        )
    if multivi:
        phase = multivi["training"]
        rows.append(
            f"| **MULTIVI, all of `train()`** | {phase['epochs']} | **{multivi['train_seconds']}** | "
            f"{phase['median_step_ms']} | {memory(multivi)} | "
            f"{multivi['kmeans_ari']} / {multivi['kmeans_nmi']} |"
        )
    return (
        f"{result['data']} ({result['n_cells']:,} cells), {result['device']}, seed {result['seed']}, "
        f"scmvp_scvi {result['scmvp_scvi']}, scvi-tools {result['scvi_tools']}, torch {result['torch']}. "
        "Produced by `python benchmarks/gpu.py`.\n\n"
        "| model and phase | epochs | seconds | median step (ms) | peak device memory (GB) | KMeans ARI / NMI |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="paired .h5mu (modalities rna, atac)")
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--accelerator", default="gpu", help="'gpu' (default) or 'cpu' for a smoke test")
    parser.add_argument("--epochs", type=int, default=None, help="SCMVP epochs per phase (default: its recipe)")
    parser.add_argument("--multivi-max-epochs", type=int, default=100)
    parser.add_argument("--methods", nargs="+", choices=["scmvp", "multivi"], default=["scmvp", "multivi"])
    parser.add_argument("--n-cells", type=int, default=None, help="a seeded subsample of cells")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--table", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args()

    import mudata as md
    import scvi
    import torch

    import scmvp_scvi

    cuda = args.accelerator in ("gpu", "cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("No CUDA device is visible; run with --accelerator cpu for a smoke test.")

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize()

    def peak_memory() -> float | None:
        return round(torch.cuda.max_memory_allocated() / 1e9, 3) if cuda else None

    device_kwargs = {"accelerator": args.accelerator, "devices": 1}
    mdata = md.read_h5mu(args.data)
    if args.n_cells is not None and args.n_cells < mdata.n_obs:
        keep = np.sort(np.random.default_rng(args.seed).choice(mdata.n_obs, args.n_cells, replace=False))
        mdata = mdata[keep].copy()
    labels = mdata.obs[args.label_key].astype(str).to_numpy()
    result = {
        "data": args.data.name,
        "n_cells": int(mdata.n_obs),
        "seed": args.seed,
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.machine()}, {os.cpu_count()} cores)",
        "scmvp_scvi": scmvp_scvi.__version__,
        "scvi_tools": scvi.__version__,
        "torch": torch.__version__,
        "models": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu_{args.data.stem}.json"
    runners = {"scmvp": run_scmvp, "multivi": run_multivi}
    for method in args.methods:
        scvi.settings.seed = args.seed
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        figures = runners[method](mdata.copy(), args, device_kwargs, synchronize, peak_memory)
        figures.update(kmeans_scores(figures.pop("latent"), labels, args.seed))
        result["models"][method] = figures
        path.write_text(json.dumps(result, indent=2) + "\n")  # after each model: a run cut short keeps it
        print(f"{method}: {json.dumps(figures)}", flush=True)
    table = render_table(result)
    print(table)
    if args.table is not None:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(table)


if __name__ == "__main__":
    main()
