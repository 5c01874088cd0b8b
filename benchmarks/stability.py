"""Numerical stability of SCMVP on real data: several seeds, the default and a 10x larger learning rate.

Usage::

    python benchmarks/stability.py                 # 2,000-cell subsample of snare_cortex.h5mu, 3 seeds x 2 rates

For each run, checks that every logged loss term, the latent and both imputations are finite, and writes
``benchmarks/results/stability_<data>.json``. A run whose loss turns NaN stops with SCMVP's own error, which is
recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import mudata as md
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("SCMVP_DATA_DIR", ROOT.parent / "shared" / "data")) / "snare_cortex.h5mu"


def one_run(mdata: md.MuData, seed: int, lr: float, epochs: int) -> dict:
    import scvi

    import scmvp_scvi

    scvi.settings.seed = seed
    mdata = mdata.copy()
    scmvp_scvi.SCMVP.setup_mudata(mdata)
    model = scmvp_scvi.SCMVP(mdata)
    start = time.perf_counter()
    try:
        model.train(max_epochs=epochs, pretrain_epochs=epochs, lr=lr, accelerator="cpu", enable_progress_bar=False)
    except FloatingPointError as error:
        return {"seed": seed, "lr": lr, "finished": False, "error": str(error)}
    history = pd.concat([frame for name, frame in model.history.items() if name != "training_phase"], axis=1).astype(
        float
    )
    values = history.to_numpy()
    rna, atac = model.get_imputed_values(layer_key=None)
    return {
        "seed": seed,
        "lr": lr,
        "finished": True,
        "seconds": round(time.perf_counter() - start, 1),
        # phase-specific terms are missing (NaN) in the other phase; a NaN loss would have stopped training
        "history_finite": bool(np.isfinite(values[~np.isnan(values)]).all()),
        "latent_finite": bool(np.isfinite(model.get_latent_representation(key_added=None)).all()),
        "imputations_finite": bool(np.isfinite(rna).all() and np.isfinite(atac).all()),
        "final_train_loss": float(history["train_loss"].iloc[-1]),
        "n_centroids": model.n_centroids,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n-cells", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lrs", type=float, nargs="+", default=[5e-3, 5e-2])
    parser.add_argument("--epochs", type=int, default=10, help="epochs per training phase")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    mdata = md.read_h5mu(args.data)
    if args.n_cells < mdata.n_obs:
        keep = np.sort(np.random.default_rng(0).choice(mdata.n_obs, args.n_cells, replace=False))
        mdata = mdata[keep].copy()
    runs = []
    for lr in args.lrs:
        for seed in args.seeds:
            runs.append(one_run(mdata, seed, lr, args.epochs))
            print(json.dumps(runs[-1]), flush=True)
    result = {
        "data": args.data.name,
        "n_cells": int(mdata.n_obs),
        "epochs_per_phase": args.epochs,
        "command": "python benchmarks/stability.py",
        "all_finite": all(
            r["finished"] and r["history_finite"] and r["latent_finite"] and r["imputations_finite"] for r in runs
        ),
        "runs": runs,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"stability_{args.data.stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
