"""One-seed screen of SCMVP's joint phase on a mosaic: which part of it separates the single-modality cells.

Pretrains an SCMVP method of ``mosaic.py`` on one seed's mosaic (or loads the model it saved before, after
pretraining and the mixture initialisation), then runs only the joint phase with one part changed and scores each
result as ``mosaic.py`` does, plus the number of active latent dimensions of each kind of cell (dimensions whose
posterior means vary across those cells with a variance above 0.01). It is a screen, not a result: one seed.
Anything it suggests is confirmed with ``mosaic.py`` over 3 seeds before it changes a default.

Usage::

    python benchmarks/mosaic_screen.py --method scmvp --seed 0 --screens pretrained reference_weights

Writes ``benchmarks/results/mosaic_screens/<name>_<method>_seed<k>_<screen>.json``, prints one line per screen and
rebuilds the table ``docs/mosaic_screen_table.md`` from every result file (``--table-only``: only that).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare import DEFAULT_DATA, read_data  # noqa: E402
from mosaic import (  # noqa: E402
    KINDS,
    SCMVP_MODELS,
    make_mosaic,
    pretrained_model,
    scmvp_outputs,
    scmvp_train_kwargs,
    score_outputs,
)

# name -> (what it changes, module weights to set, SCMVP.train arguments to change, mixture variances to re-initialise
# with or None); "pretrained" is not trained further
SCREENS: dict[str, tuple[str, dict, dict, str | None]] = {
    "pretrained": ("no joint training: the model after pretraining and the mixture initialisation", {}, {}, None),
    "recipe": ("the method's own joint phase", {}, {}, None),
    "original_switch": (
        "the original switch to the mixture prior: KL warm-up restarted over half of joint training, cluster terms "
        "at full weight at once, mixture re-initialised (KMeans, same K) with variances from the spread of the means",
        {},
        {"n_epochs_kl_warmup": None, "n_epochs_cluster_warmup": 0},
        "means",
    ),
    "reference_weights": (
        "reconstruction weights RNA 3 / ATAC 0.1 in joint training",
        {"rna": 3.0, "atac": 0.1},
        {},
        None,
    ),
    "joint_atac01": ("ATAC weight 0.1 in joint training, RNA weight unchanged", {"atac": 0.1}, {}, None),
    "alignment50": ("alignment weight 50 in joint training (10 in pretraining)", {"alignment": 50.0}, {}, None),
    "nocluster": ("no cluster terms (cluster weight 0)", {"cluster": 0.0}, {}, None),
    "nosingle": ("no single-modality VAE terms in joint training", {"single": 0.0}, {}, None),
}


def active_dimensions(latent: np.ndarray, kinds: np.ndarray) -> dict[str, int]:
    """Per kind of cell, the latent dimensions whose means vary across those cells (variance above 0.01)."""
    return {f"active_dims_{kind}": int((latent[kinds == kind].var(axis=0) > 0.01).sum()) for kind in KINDS}


def alignment_gaps(model, latent: np.ndarray, kinds: np.ndarray) -> dict[str, float]:
    """How far each single-modality encoder places the paired cells from their joint posterior.

    The mean squared distance between a paired cell's RNA-only (ATAC-only) posterior mean and its joint one, over
    the mean squared distance of the joint means from their centre: 0 when the encoders agree, about 2 when the
    single-modality encoder places each cell as far off as a random other paired cell.
    """
    paired = np.flatnonzero(kinds == "paired")
    joint = latent[paired]
    spread = ((joint - joint.mean(axis=0)) ** 2).sum(axis=1).mean()
    gaps = {}
    for modality in ("rna", "atac"):
        single = model.get_latent_representation(indices=paired, modality=modality, key_added=None)
        gaps[f"alignment_gap_{modality}"] = float(((single - joint) ** 2).sum(axis=1).mean() / spread)
    return gaps


def seed_mosaic(args: argparse.Namespace) -> tuple:
    """The labelled data, this seed's mosaic (set up for SCMVP), the kind of each cell and the labels."""
    import scmvp_scvi

    mdata = read_data(argparse.Namespace(data=args.data, n_cells=args.n_cells, seed=0))
    mosaic, kinds = make_mosaic(mdata, args.seed)
    scmvp_scvi.SCMVP.setup_mudata(mosaic, missing_modality="zero_rows")
    return mdata, mosaic, kinds, mdata.obs[args.label_key].astype(str).to_numpy()


def run_screen(name: str, args: argparse.Namespace, data: tuple) -> dict:
    """Load the pretrained model, change one part, train the joint phase and score it."""
    import scvi

    _, weights, changed, variance = SCREENS[name]
    mdata, mosaic, kinds, labels = data
    scvi.settings.seed = args.seed
    train_kwargs = scmvp_train_kwargs(args.method, mosaic.n_obs, args.epochs)
    model = pretrained_model(args, args.method, mosaic, train_kwargs)
    model.module.weights.update(weights)
    start = time.perf_counter()
    if variance is not None:
        model.initialize_gmm(variance=variance)
    if name != "pretrained":
        # the mixture is initialised already
        train_kwargs = {**train_kwargs, **changed, "pretrain_epochs": 0}
        train_kwargs = {k: v for k, v in train_kwargs.items() if k != "gmm_variance"}
        model.train(**train_kwargs, accelerator="cpu", enable_progress_bar=False)
    seconds = time.perf_counter() - start
    latent, rna, atac = scmvp_outputs(model, kinds)
    return {
        "screen": name,
        "method": args.method,
        "seed": args.seed,
        "seconds": seconds,
        **score_outputs(mdata, kinds, labels, args.seed, latent, rna, atac),
        **active_dimensions(latent, kinds),
        **alignment_gaps(model, latent, kinds),
    }


TABLE_COLUMNS = (
    ("Leiden ARI / NMI", ("leiden_ari", "leiden_nmi")),
    ("mixing: paired / RNA-only / ATAC-only", ("mixing_paired", "mixing_rna_only", "mixing_atac_only")),
    ("active dimensions: paired / RNA-only / ATAC-only", tuple(f"active_dims_{kind}" for kind in KINDS)),
    ("alignment gap of paired cells: RNA / ATAC", ("alignment_gap_rna", "alignment_gap_atac")),
    ("hidden RNA: Pearson per gene", ("hidden_rna_gene_pearson",)),
    ("hidden ATAC: AUROC per peak", ("hidden_atac_peak_auroc",)),
)


def _format(value: float | int, key: str) -> str:
    return str(value) if key.startswith("active") else f"{value:.3f}"


def write_table(args: argparse.Namespace) -> str:
    """One row per result file of this data set, in the order of ``SCREENS``."""
    runs = [json.loads(path.read_text()) for path in sorted(args.results.glob(f"{args.name}_*.json"))]
    runs.sort(key=lambda run: (run["method"], run["seed"], list(SCREENS).index(run["screen"])))
    lines = [
        "<!-- written by benchmarks/mosaic_screen.py; included by mosaic.md -->",
        "",
        "One seed per row; the joint phase starts from the same pretrained model in every row of a method and seed. "
        "Produced by:",
        "",
        "```bash",
        *[
            f"python benchmarks/mosaic_screen.py --method {method} --seed {seed} --screens "
            + " ".join(run["screen"] for run in runs if (run["method"], run["seed"]) == (method, seed))
            for method, seed in dict.fromkeys((run["method"], run["seed"]) for run in runs)
        ],
        "```",
        "",
        "| method | seed | screen | what it changes | " + " | ".join(title for title, _ in TABLE_COLUMNS) + " |",
        "|---|---|---|---|" + "---|" * len(TABLE_COLUMNS),
    ]
    for run in runs:
        cells = [" / ".join(_format(run[key], key) for key in keys) for _, keys in TABLE_COLUMNS]
        lines.append(
            f"| `{run['method']}` | {run['seed']} | `{run['screen']}` | {SCREENS[run['screen']][0]} | "
            + " | ".join(cells)
            + " |"
        )
    text = "\n".join(lines) + "\n"
    args.table.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=list(SCMVP_MODELS), default="scmvp")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--screens", nargs="+", choices=list(SCREENS), default=list(SCREENS))
    parser.add_argument("--epochs", type=int, default=None, help="epochs per phase (default: the recipe's)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--n-cells", type=int, default=None, help="a seeded subsample of cells")
    parser.add_argument("--name", default=None, help="result name (default: the data file's stem)")
    parser.add_argument("--models", type=Path, default=HERE / "models", help="where the pretrained models are kept")
    parser.add_argument("--results", type=Path, default=HERE / "results" / "mosaic_screens")
    parser.add_argument("--table", type=Path, default=HERE.parent / "docs" / "mosaic_screen_table.md")
    parser.add_argument("--table-only", action="store_true", help="only rebuild the table from the JSON files")
    args = parser.parse_args()
    args.name = args.name or args.data.stem
    args.results.mkdir(parents=True, exist_ok=True)
    data = None if args.table_only else seed_mosaic(args)
    for name in [] if args.table_only else args.screens:
        result = run_screen(name, args, data)
        result = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}
        (args.results / f"{args.name}_{args.method}_seed{args.seed}_{name}.json").write_text(
            json.dumps(result, indent=1) + "\n"
        )
        print(json.dumps(result), flush=True)
    print(write_table(args))


if __name__ == "__main__":
    main()
