"""Time and memory of SCMVP and MULTIVI as the number of cells grows: training steps and every output.

Usage::

    python benchmarks/scaling.py                               # 10k, 100k and 1M cells resampled from snare_cortex
    python benchmarks/scaling.py --sizes 10000 100000 --steps 30
    python benchmarks/scaling.py --table-only                  # table and figure again from the JSON

Each size is built by drawing cells of snare_cortex with replacement (sparse counts, the same genes and peaks).
Every (method, size) runs in its own process, so that its peak memory is its own. A run times ``--steps``
training steps per phase at batch size ``--batch-size`` for both methods (the median step, data loading
included; seconds per epoch are that times the steps of one epoch over 90% of the cells), then each output:
the latent, SCMVP's mixture clusters, the normalised expression of all genes and the open probability of every
``--peak-step``-th peak (dense; both methods decode every peak, so the time is that of all peaks). For each
stage it records the seconds and the peak resident memory (sampled every 20 ms). Writes
``benchmarks/results/scaling.json``, the table ``docs/scaling_table.md`` and the figure
``docs/figures/scaling.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("SCMVP_DATA_DIR", ROOT.parent / "shared" / "data")) / "snare_cortex.h5mu"
METHODS = ("scmvp", "multivi")
LABELS = {"scmvp": "SCMVP", "multivi": "MULTIVI"}
WARMUP_STEPS = 5
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


class Stages:
    """Seconds and peak resident memory of each named stage, sampled by a background thread."""

    def __init__(self):
        self.results: dict[str, dict[str, float]] = {}
        self._peak = 0
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self._peak = max(self._peak, rss_bytes())

    @contextmanager
    def stage(self, name: str):
        self._peak = rss_bytes()
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self._peak = max(self._peak, rss_bytes())
        self.results[name] = {"seconds": round(seconds, 2), "peak_rss_gb": round(self._peak / 1e9, 3)}
        print(f"  {name}: {seconds:.1f} s, peak RSS {self._peak / 1e9:.2f} GB", file=sys.stderr, flush=True)


def step_timer():
    """Lightning callback: the time between the starts of consecutive training steps (loading included)."""
    from lightning.pytorch.callbacks import Callback

    class StepTimer(Callback):
        def __init__(self):
            self.starts: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.starts.append(time.perf_counter())

        def on_train_epoch_end(self, trainer, pl_module):
            self.starts.append(time.perf_counter())

        def median_ms(self) -> float:
            steps = np.diff(self.starts)[WARMUP_STEPS:]
            return round(float(np.median(steps)) * 1e3, 1)

    return StepTimer()


def resampled(path: Path, n_cells: int, seed: int):
    """``n_cells`` cells drawn with replacement from the MuData at ``path``, with unique names."""
    import anndata as ad
    import mudata as md

    base = md.read_h5mu(path)
    rows = np.sort(np.random.default_rng(seed).choice(base.n_obs, n_cells, replace=True))
    names = [f"cell_{i}" for i in range(n_cells)]
    mods = {}
    for name in ("rna", "atac"):
        modality = base[name]
        obs = modality.obs.iloc[rows].set_axis(names)
        mods[name] = ad.AnnData(modality.X[rows], obs=obs, var=modality.var.copy())
    del base
    return md.MuData(mods)


def run_one(method: str, n_cells: int, args: argparse.Namespace) -> dict:
    """All stages of one method at one size (called in a process of its own)."""
    import scvi
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    scvi.settings.seed = args.seed
    stages = Stages()
    with stages.stage("data"):
        mdata = resampled(args.data, n_cells, args.seed)
    train_kwargs = {
        "accelerator": "cpu",
        "enable_progress_bar": False,
        "batch_size": args.batch_size,
        "limit_train_batches": WARMUP_STEPS + args.steps,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
    }
    steps_per_epoch = int(np.ceil(0.9 * n_cells / args.batch_size))
    peaks = list(mdata["atac"].var_names[:: args.peak_step])
    step_ms: dict[str, float] = {}
    if method == "scmvp":
        import scmvp_scvi

        with stages.stage("setup"):
            scmvp_scvi.SCMVP.setup_mudata(mdata)
            # K fixed at the number of cell types: a few dozen steps leave the latent too unformed for Leiden to
            # find a realistic K, and the cost of every step and output grows with K
            model = scmvp_scvi.SCMVP(mdata, n_centroids=args.n_centroids)
        timer = step_timer()
        with stages.stage("pretraining"):
            model.train(max_epochs=0, pretrain_epochs=1, callbacks=[timer], **train_kwargs)
        step_ms["pretraining"] = timer.median_ms()
        # train() has initialised the mixture once; time the same initialisation on its own
        with stages.stage("mixture initialisation"):
            model.initialize_gmm()
        timer = step_timer()
        with stages.stage("joint training"):
            model.train(max_epochs=1, callbacks=[timer], **train_kwargs)
        step_ms["joint training"] = timer.median_ms()
        with stages.stage("latent"):
            model.get_latent_representation(batch_size=args.output_batch_size)
        with stages.stage("clusters"):
            model.get_cluster_assignments(batch_size=args.output_batch_size)
        with stages.stage("expression"):
            model.get_normalized_expression(batch_size=args.output_batch_size, return_numpy=True)
        with stages.stage("accessibility"):
            model.get_normalized_accessibility(batch_size=args.output_batch_size, region_list=peaks, return_numpy=True)
    else:
        with stages.stage("setup"):
            scvi.model.MULTIVI.setup_mudata(mdata, modalities={"rna_layer": "rna", "atac_layer": "atac"})
            model = scvi.model.MULTIVI(mdata)
        timer = step_timer()
        with stages.stage("training"):  # no validation set, so no early stopping either
            model.train(max_epochs=1, early_stopping=False, callbacks=[timer], **train_kwargs)
        step_ms["training"] = timer.median_ms()
        with stages.stage("latent"):
            model.get_latent_representation(batch_size=args.output_batch_size)
        with stages.stage("expression"):
            model.get_normalized_expression(batch_size=args.output_batch_size, return_numpy=True)
        with stages.stage("accessibility"):
            model.get_normalized_accessibility(batch_size=args.output_batch_size, region_list=peaks, return_numpy=True)
    return {
        "method": method,
        "n_cells": n_cells,
        "step_ms": step_ms,
        "seconds_per_epoch": {phase: round(ms * steps_per_epoch / 1e3, 1) for phase, ms in step_ms.items()},
        "stages": stages.results,
    }


def run_in_process(method: str, n_cells: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", method, str(n_cells), *args.passthrough]
    print(f"{LABELS[method]}, {n_cells:,} cells", file=sys.stderr, flush=True)
    completed = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if completed.returncode != 0:
        return {"method": method, "n_cells": n_cells, "failed": f"exit status {completed.returncode}"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def training_peak_gb(result: dict) -> float:
    """Peak resident memory over the training phases of one run."""
    return max(result["stages"][phase]["peak_rss_gb"] for phase in result["step_ms"])


def _package_version() -> str:
    from importlib.metadata import version

    return version("scmvp_scvi")


def _version_note(meta: dict) -> str:
    # runs written before the version was recorded have none
    return f"scmvp_scvi {meta['scmvp_scvi']}; " if "scmvp_scvi" in meta else ""


def write_table(results: list[dict], meta: dict, path: Path) -> None:
    sizes = sorted({r["n_cells"] for r in results})
    by_key = {(r["method"], r["n_cells"]): r for r in results}
    rows = [
        ("Seconds per epoch: pretraining / joint training (MULTIVI: training)", "epoch"),
        ("Milliseconds per step", "step"),
        ("Peak memory of training (GB)", "train_rss"),
        ("Cells drawn, in memory: seconds / peak GB", ("data",)),
        ("Setup and model construction: seconds / peak GB", ("setup",)),
        ("Mixture initialisation: seconds / peak GB", ("mixture initialisation",)),
        ("Latent: seconds / peak GB", ("latent",)),
        ("Mixture clusters: seconds / peak GB", ("clusters",)),
        ("Expression, all genes, dense: seconds / peak GB", ("expression",)),
        (f"Accessibility of {meta['n_peaks_output']:,} peaks, dense: seconds / peak GB", ("accessibility",)),
    ]

    def cell(result: dict | None, key) -> str:
        if result is None:
            return "not run"
        if "failed" in result:
            return f"failed ({result['failed']})"
        if key == "epoch":
            return " / ".join(f"{v:,.1f}" for v in result["seconds_per_epoch"].values())
        if key == "step":
            return " / ".join(f"{v:.0f}" for v in result["step_ms"].values())
        stages = result["stages"]
        if key == "train_rss":
            return f"{training_peak_gb(result):.2f}"
        stage = stages.get(key[0])
        return "-" if stage is None else f"{stage['seconds']:,.1f} / {stage['peak_rss_gb']:.2f}"

    header = ["metric"] + [f"{LABELS[m]}, {n:,} cells" for n in sizes for m in METHODS]
    lines = [
        "<!-- written by benchmarks/scaling.py; included by benchmarks.md -->",
        "",
        f"Cells drawn with replacement from snare_cortex ({meta['n_genes']:,} genes, {meta['n_peaks']:,} peaks); "
        f"{meta['steps']} timed steps per phase at batch size {meta['batch_size']} after {WARMUP_STEPS} untimed "
        f"ones; SCMVP with K = {meta['n_centroids']} mixture components (KMeans initialisation on at most 50,000 "
        f"cells); {meta['cpu']}; {_version_note(meta)}one run at a time. Peak memory is the resident set size of "
        "the run's process, data included. Produced by:",
        "",
        "```bash",
        "python benchmarks/scaling.py",
        "```",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for label, key in rows:
        values = [cell(by_key.get((m, n)), key) for n in sizes for m in METHODS]
        lines.append("| " + " | ".join([label, *values]) + " |")
    path.write_text("\n".join(lines) + "\n")


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    # (title, y scale, value of one run); memory starts from the data's own size, so its axis is linear from zero
    panels = [
        ("Seconds per training epoch", "log", lambda r: max(r["seconds_per_epoch"].values())),
        ("Peak memory of training (GB)", "linear", training_peak_gb),
        (
            "Seconds of latent, expression, accessibility",
            "log",
            lambda r: sum(r["stages"][s]["seconds"] for s in ("latent", "expression", "accessibility")),
        ),
    ]
    for ax, (title, yscale, value) in zip(axes, panels, strict=True):
        for method in METHODS:
            done = sorted(
                (r for r in results if r["method"] == method and "failed" not in r), key=lambda r: r["n_cells"]
            )
            if done:
                ax.plot([r["n_cells"] for r in done], [value(r) for r in done], "o-", label=LABELS[method])
        ax.set(xscale="log", yscale=yscale, xlabel="cells", title=title)
        if yscale == "linear":
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="paired .h5mu (modalities rna, atac)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--steps", type=int, default=50, help="timed training steps per phase")
    parser.add_argument("--batch-size", type=int, default=128, help="training minibatch, the same for both")
    parser.add_argument("--output-batch-size", type=int, default=1024, help="minibatch of the outputs")
    parser.add_argument("--peak-step", type=int, default=25, help="accessibility of every n-th peak")
    parser.add_argument("--n-centroids", type=int, default=15, help="SCMVP's mixture components (cell types)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "scaling.json")
    parser.add_argument("--table", type=Path, default=ROOT / "docs" / "scaling_table.md")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "scaling.png")
    parser.add_argument("--table-only", action="store_true", help="rewrite the table and figure from the JSON")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "N_CELLS"), help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()
    if args.worker:
        method, n_cells = args.worker
        print(json.dumps(run_one(method, int(n_cells), args)))
        return
    if args.table_only:
        stored = json.loads(args.results.read_text())
        write_table(stored["results"], stored["meta"], args.table)
        plot(stored["results"], args.figure)
        return
    args.passthrough = [
        f"--data={args.data}",
        f"--steps={args.steps}",
        f"--batch-size={args.batch_size}",
        f"--output-batch-size={args.output_batch_size}",
        f"--peak-step={args.peak_step}",
        f"--seed={args.seed}",
        f"--n-centroids={args.n_centroids}",
    ]
    import mudata as md

    base = md.read_h5mu(args.data, backed=True)
    meta = {
        "n_genes": int(base["rna"].n_vars),
        "n_peaks": int(base["atac"].n_vars),
        "n_peaks_output": len(range(0, int(base["atac"].n_vars), args.peak_step)),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "n_centroids": args.n_centroids,
        "cpu": f"CPU only ({platform.machine()}, {os.cpu_count()} cores)",
        "scmvp_scvi": _package_version(),
    }
    base.file.close()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for n_cells in args.sizes:
        for method in args.methods:
            results.append(run_in_process(method, n_cells, args))
            # written after every run, so that a long run that is stopped keeps what it measured
            args.results.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
            write_table(results, meta, args.table)
    plot(results, args.figure)
    print(f"Wrote {args.results}, {args.table} and {args.figure}", file=sys.stderr)


if __name__ == "__main__":
    main()
