"""SCMVP against MULTIVI and a nearest-neighbour baseline on a mosaic of paired and single-modality cells.

Each seed hides the ATAC of a random 30% of the cells of a labelled paired data set and the RNA of another 30%
(all-zero rows, the convention both models read as "not measured"), trains on that mosaic and scores:

- the latent of all cells: KMeans and best-NMI Leiden ARI/NMI against the cell types, and for SCMVP its own
  mixture clusters (``get_cluster_assignments``) and their number K;
- mixing within cell types: for each kind of cell (paired, RNA-only, ATAC-only), the fraction of its 15 nearest
  neighbours that are of another kind, divided by the fraction of cells of another kind in its cell type
  (1: the kinds are mixed as if placed at random within each type; 0: they sit apart);
- prediction of the hidden profiles, against the truth that was hidden: RNA of the ATAC-only cells (Pearson of
  log1p(CP10k) per cell and per gene) and ATAC of the RNA-only cells (AUROC and AUPRC against binarised peaks,
  per cell and per peak).

Methods, each in a process of its own:

- ``scmvp``: ``SCMVP.setup_mudata(mdata, missing_modality="zero_rows")`` and the default recipe (the ablation's
  balanced recipe). On request instead: ``scmvp_align1``, the default recipe with ``alignment_weight=1`` (the
  default before it was 10), and ``scmvp_poisson``, the default recipe with ``atac_likelihood="poisson"``;
- ``multivi``: scvi-tools' MULTIVI as its mosaic tutorial sets it up (the kind of cell as ``batch_key``), trained
  to its early stopping, capped at ``--multivi-max-epochs``;
- ``knn``: each single-modality cell gets the mean profile, in its missing modality, of its 15 nearest paired
  cells in the PCA (RNA) or LSI (ATAC) space of the modality it has; the population mean of the cells that have
  the modality is scored beside it as the floor any method should beat.

Usage::

    python benchmarks/mosaic.py                     # snare_cortex, 3 seeds, about 30 min per seed on 2 CPU cores
    python benchmarks/mosaic.py --n-cells 1000 --max-epochs 2 --multivi-max-epochs 2 --seeds 0 --name smoke
    python benchmarks/mosaic.py --methods scmvp --models benchmarks/models   # reuse saved pretraining

With ``--models``, an SCMVP run loads the model that pretraining its method on that seed's mosaic gave (the one
``benchmarks/mosaic_screen.py`` saves), or pretrains and saves it, and trains only the joint phase; its training
time is then not recorded.

Writes ``benchmarks/results/mosaic/<name>_<method>_seed<seed>.json`` (runs already there are kept; ``--force``
reruns them), the table ``docs/mosaic_table.md`` and the figure ``docs/figures/<name>_mosaic.png``.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ablation import _mean_sd, reinitialise_mixture  # noqa: E402
from compare import DEFAULT_DATA, atac_lsi, epoch_timer, peak_rss_gb, read_data, rna_pca  # noqa: E402

ROOT = HERE.parent
METHODS = ("scmvp", "scmvp_align1", "scmvp_poisson", "multivi", "knn")
TITLES = {
    "scmvp": "SCMVP",
    "scmvp_align1": "SCMVP, alignment weight 1",
    "scmvp_poisson": "SCMVP, Poisson ATAC likelihood",
    "multivi": "MULTIVI",
    "knn": "15 nearest paired cells",
    "mean": "population mean",
}
KINDS = ("paired", "rna_only", "atac_only")
HIDDEN_FRACTION = 0.3


def make_mosaic(mdata, seed: int):
    """The data with the ATAC of 30% of the cells and the RNA of another 30% set to zero, and each cell's kind."""
    from scipy import sparse

    order = np.random.default_rng(seed).permutation(mdata.n_obs)
    n_hidden = int(HIDDEN_FRACTION * mdata.n_obs)
    kinds = np.full(mdata.n_obs, "paired", dtype=object)
    kinds[order[:n_hidden]] = "rna_only"
    kinds[order[n_hidden : 2 * n_hidden]] = "atac_only"
    mosaic = mdata.copy()
    for modality, hidden_kind in (("atac", "rna_only"), ("rna", "atac_only")):
        keep = sparse.diags((kinds != hidden_kind).astype(np.float32))
        mosaic.mod[modality].X = sparse.csr_matrix(keep @ sparse.csr_matrix(mdata[modality].X))
        mosaic.mod[modality].X.eliminate_zeros()
    return mosaic, kinds.astype(str)


# model arguments of each SCMVP method; alignment_weight=1 was the default before it became 10
SCMVP_MODELS = {
    "scmvp": {},
    "scmvp_align1": {"alignment_weight": 1.0},
    "scmvp_poisson": {"atac_likelihood": "poisson"},
}


def scmvp_train_kwargs(method: str, n_cells: int, max_epochs: int | None = None) -> dict:
    """``SCMVP.train`` arguments of an SCMVP method: the defaults, with ``max_epochs`` epochs per phase if given."""
    return {} if max_epochs is None else {"max_epochs": max_epochs, "pretrain_epochs": max_epochs}


def pretrained_path(args: argparse.Namespace, method: str) -> Path:
    """Where the method's model after pretraining on this seed's mosaic is kept."""
    return args.models / f"{args.name}_{method}_seed{args.seed}_pretrained"


def pretrained_model(args: argparse.Namespace, method: str, mosaic, train_kwargs: dict):
    """The method's model after pretraining and the mixture initialisation on this seed's mosaic.

    Loaded from ``args.models``, or trained and saved there: pretraining does not depend on joint-training options,
    so runs that differ only in those share it. A loaded model's mixture is initialised again with the current
    defaults (deterministic: the same as the saved one when they have not changed).
    """
    import scmvp_scvi

    path = pretrained_path(args, method)
    if path.exists():
        model = scmvp_scvi.SCMVP.load(path, adata=mosaic)
        reinitialise_mixture(model, SCMVP_MODELS[method].get("n_centroids"), batch_size=256)
        return model
    model = scmvp_scvi.SCMVP(mosaic, **SCMVP_MODELS[method])
    model.train(**{**train_kwargs, "max_epochs": 0}, accelerator="cpu", enable_progress_bar=False)
    model.save(path, overwrite=True)
    return model


def run_scmvp(
    mosaic, kinds: np.ndarray, args: argparse.Namespace, method: str = "scmvp"
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    import scmvp_scvi
    from scmvp_scvi.metrics import agreement

    scmvp_scvi.SCMVP.setup_mudata(mosaic, missing_modality="zero_rows")
    train_kwargs = scmvp_train_kwargs(method, mosaic.n_obs, args.max_epochs)
    start = time.perf_counter()
    if args.models is None:
        model, info = scmvp_scvi.SCMVP(mosaic, **SCMVP_MODELS[method]), {}
    else:
        path = pretrained_path(args, method)
        # a pretraining loaded from an earlier run is not timed in this one
        info = {"pretrained": path.name, **({"train_seconds": None} if path.exists() else {})}
        model = pretrained_model(args, method, mosaic, train_kwargs)
        train_kwargs["pretrain_epochs"] = 0
    model.train(**train_kwargs, accelerator="cpu", enable_progress_bar=False)
    # epochs of both phases, a loaded pretraining's included
    info = {
        "train_seconds": time.perf_counter() - start,
        **info,
        "epochs": len(model.history["training_phase"]),
        "scmvp_scvi": scmvp_scvi.__version__,
        "n_components": model.n_centroids,
        # the model's own clusters (argmax of p(c | z)), of all cells
        **agreement(mosaic.obs[args.label_key].astype(str), model.get_cluster_assignments(key_added=None), "mixture_"),
    }
    return info, *scmvp_outputs(model, kinds)


def scmvp_outputs(model, kinds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The latent of all cells, the predicted RNA of the ATAC-only cells and ATAC of the RNA-only cells."""
    latent = model.get_latent_representation(key_added=None)
    rna = model.get_normalized_expression(return_numpy=True)[kinds == "atac_only"]
    atac = model.get_normalized_accessibility(return_numpy=True)[kinds == "rna_only"]
    return latent, rna, atac


def run_multivi(mosaic, kinds: np.ndarray, args: argparse.Namespace) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    import scvi

    mosaic.obs["modality"] = kinds
    scvi.model.MULTIVI.setup_mudata(mosaic, batch_key="modality", modalities={"rna_layer": "rna", "atac_layer": "atac"})
    model = scvi.model.MULTIVI(mosaic)
    timer = epoch_timer()
    start = time.perf_counter()
    model.train(max_epochs=args.multivi_max_epochs, accelerator="cpu", enable_progress_bar=False, callbacks=[timer])
    info = {"train_seconds": time.perf_counter() - start, "epochs": len(timer.seconds)}
    latent = model.get_latent_representation()
    rna = model.get_normalized_expression(return_numpy=True)[kinds == "atac_only"]
    atac = model.get_normalized_accessibility(return_numpy=True)[kinds == "rna_only"]
    return info, latent, rna, atac


def modality_spaces(mosaic, kinds: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """20 PCs of scaled log-normalised RNA and LSI components 2-21 of TF-IDF ATAC, each of the cells that have it."""
    return {
        "rna": rna_pca(mosaic["rna"][kinds != "atac_only"], seed),
        "atac": atac_lsi(mosaic["atac"][kinds != "rna_only"]),
    }


def run_knn(mosaic, kinds: np.ndarray, args: argparse.Namespace) -> tuple[dict, None, np.ndarray, np.ndarray, dict]:
    """Predictions of the nearest-neighbour baseline, with the population mean's in ``info``."""
    from scmvp_scvi.metrics import knn_imputation, mean_imputation

    start = time.perf_counter()
    spaces = modality_spaces(mosaic, kinds, args.seed)
    predictions = {}
    # RNA of the ATAC-only cells from the paired cells near them in ATAC space, and the reverse
    for observed, missing, query in (("atac", "rna", "atac_only"), ("rna", "atac", "rna_only")):
        cells = kinds != ("rna_only" if observed == "atac" else "atac_only")  # the cells that have `observed`
        counts = mosaic[missing].X[cells]  # zero rows for `query` cells: never drawn, only paired ones are
        imputed = knn_imputation(counts, spaces[observed], missing, reference=kinds[cells] == "paired")
        predictions[missing] = imputed[kinds[cells] == query]
    info = {"train_seconds": time.perf_counter() - start}
    means = {
        modality: mean_imputation(mosaic[modality].X[kinds != hidden_from], modality)[:1]
        for modality, hidden_from in (("rna", "atac_only"), ("atac", "rna_only"))
    }
    return info, None, predictions["rna"], predictions["atac"], means


def mixing(latent: np.ndarray, kinds: np.ndarray, labels: np.ndarray, n_neighbors: int = 15) -> dict[str, float]:
    """Per kind of cell: other-kind fraction of its neighbours over the other-kind fraction of its cell type."""
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(latent).kneighbors(latent, return_distance=False)
    observed = (kinds[index[:, 1:]] != kinds[:, None]).mean(axis=1)
    expected = np.empty(len(kinds))
    for label in np.unique(labels):
        in_type = labels == label
        for kind in KINDS:
            cells = in_type & (kinds == kind)
            # other cells of the type that are of another kind, the cell itself left out
            expected[cells] = (in_type & (kinds != kind)).sum() / max(in_type.sum() - 1, 1)
    return {f"mixing_{kind}": float(observed[kinds == kind].mean() / expected[kinds == kind].mean()) for kind in KINDS}


def prediction_scores(mdata, kinds: np.ndarray, rna: np.ndarray, atac: np.ndarray, prefix: str) -> dict[str, float]:
    """Scores of the predicted RNA of the ATAC-only cells and the predicted ATAC of the RNA-only cells."""
    from scmvp_scvi.metrics import atac_imputation_scores, rna_imputation_scores

    rna_truth = mdata["rna"].X[kinds == "atac_only"]
    atac_truth = mdata["atac"].X[kinds == "rna_only"]
    return {
        **rna_imputation_scores(rna_truth, np.broadcast_to(rna, rna_truth.shape), prefix=prefix),
        **atac_imputation_scores(atac_truth, np.broadcast_to(atac, atac_truth.shape), prefix=prefix),
    }


def score_outputs(
    mdata, kinds: np.ndarray, labels: np.ndarray, seed: int, latent: np.ndarray | None, rna, atac
) -> dict[str, float]:
    """Clustering and mixing of a latent of all cells (when there is one) and the scores of the predictions."""
    from scmvp_scvi.metrics import clustering_report

    scores = {}
    if latent is not None:
        report = clustering_report(latent, labels, seed=seed)
        scores.update({k: report[k] for k in ("kmeans_ari", "kmeans_nmi", "leiden_ari", "leiden_nmi")})
        scores.update(mixing(latent, kinds, labels))
    return {**scores, **prediction_scores(mdata, kinds, rna, atac, "hidden_")}


def run(method: str, seed: int, args: argparse.Namespace) -> dict:
    """Train one method on one seed's mosaic and score it."""
    import scvi
    import torch

    scvi.settings.seed = seed
    args.seed = seed
    mdata = read_data(argparse.Namespace(data=args.data, n_cells=args.n_cells, seed=0))
    mosaic, kinds = make_mosaic(mdata, seed)
    labels = mdata.obs[args.label_key].astype(str).to_numpy()
    info, latent, rna, atac, *extra = RUNNERS[method](mosaic, kinds, args)
    result = {
        "method": method,
        "seed": seed,
        "n_cells": int(mdata.n_obs),
        "cells_per_kind": {kind: int((kinds == kind).sum()) for kind in KINDS},
        **info,
        **score_outputs(mdata, kinds, labels, seed, latent, rna, atac),
    }
    if extra:
        result["mean"] = prediction_scores(mdata, kinds, *extra[0].values(), "hidden_")
    result["peak_rss_gb"] = peak_rss_gb()
    result["torch_threads"] = torch.get_num_threads()
    return result


RUNNERS = {
    **{method: functools.partial(run_scmvp, method=method) for method in SCMVP_MODELS},
    "multivi": run_multivi,
    "knn": run_knn,
}

# (row title, key, digits); a method without the key shows "-"
ROWS = (
    ("KMeans ARI", "kmeans_ari", 3),
    ("KMeans NMI", "kmeans_nmi", 3),
    ("Leiden ARI (best NMI)", "leiden_ari", 3),
    ("Leiden NMI (best NMI)", "leiden_nmi", 3),
    ("mixture clusters: ARI", "mixture_ari", 3),
    ("mixture clusters: NMI", "mixture_nmi", 3),
    ("mixture components (K)", "n_components", 0),
    ("mixing, paired cells", "mixing_paired", 3),
    ("mixing, RNA-only cells", "mixing_rna_only", 3),
    ("mixing, ATAC-only cells", "mixing_atac_only", 3),
    ("hidden RNA: Pearson per gene", "hidden_rna_gene_pearson", 3),
    ("hidden RNA: Pearson per cell", "hidden_rna_cell_pearson", 3),
    ("hidden ATAC: AUROC per peak", "hidden_atac_peak_auroc", 3),
    ("hidden ATAC: AUPRC per peak", "hidden_atac_peak_auprc", 3),
    ("hidden ATAC: AUROC per cell", "hidden_atac_cell_auroc", 3),
    ("hidden ATAC: AUPRC per cell", "hidden_atac_cell_auprc", 3),
    ("epochs", "epochs", 0),
)


def _cell(runs: list[dict], key: str, digits: int) -> str:
    # a constant prediction has no correlation across cells (NaN): left out, "-" when nothing is left
    return _mean_sd([r[key] for r in runs if r.get(key) is not None and np.isfinite(r[key])], digits)


def load_runs(args: argparse.Namespace) -> dict[str, list[dict]]:
    """The runs of the methods asked for (and the population mean, scored in the knn runs), in method order."""
    runs: dict[str, list[dict]] = {}
    for path in sorted(args.results.glob(f"{args.name}_*_seed*.json")):
        run = json.loads(path.read_text())
        runs.setdefault(run["method"], []).append(run)
        if "mean" in run:
            runs.setdefault("mean", []).append(run["mean"])
    shown = [*args.methods, "mean"] if "knn" in args.methods else args.methods
    return {m: runs[m] for m in shown if m in runs}


def write_figure(runs: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("hidden_rna_gene_pearson", "hidden RNA\nPearson per gene"),
        ("hidden_atac_peak_auroc", "hidden ATAC\nAUROC per peak"),
        ("leiden_ari", "Leiden ARI\n(all cells)"),
        ("mixing_atac_only", "mixing of\nATAC-only cells"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.8), layout="constrained")
    for ax, (key, title) in zip(axes, panels, strict=True):
        methods = [m for m in runs if any(key in r for r in runs[m])]
        for x, method in enumerate(methods):
            values = [r[key] for r in runs[method] if key in r]
            ax.bar(x, np.mean(values), color="#c8d6e5", width=0.6)
            ax.scatter(np.full(len(values), x), values, color="#222f3e", s=14, zorder=3)
        ax.set_xticks(range(len(methods)), [TITLES[m] for m in methods], fontsize=8, rotation=35, ha="right")
        ax.set_title(title, fontsize=10)
        if key == "hidden_atac_peak_auroc":
            ax.axhline(0.5, color="grey", lw=0.8, ls="--")
            ax.set_ylim(0.4, None)
    fig.suptitle("Mosaic: bars are means over seeds, dots single seeds", fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_table(args: argparse.Namespace, runs: dict[str, list[dict]], figure: Path) -> str:
    methods = list(runs)
    first = next(iter(runs.values()))[0]
    counts = first["cells_per_kind"]
    lines = [
        "<!-- written by benchmarks/mosaic.py; included by mosaic.md -->",
        "",
        f"{args.data.name}: {first['n_cells']:,} cells, of which {counts['paired']:,} paired, "
        f"{counts['rna_only']:,} RNA-only and {counts['atac_only']:,} ATAC-only (a new random draw per seed). "
        "Cells are mean ± standard deviation over the seeds (n in the header). Produced by:",
        "",
        "```bash",
        args.command,
        "```",
        "",
        "| metric | " + " | ".join(f"{TITLES[m]} (n={len(runs[m])})" for m in methods) + " |",
        "|---|" + "---|" * len(methods),
        *[
            f"| {title} | " + " | ".join(_cell(runs[m], key, digits) for m in methods) + " |"
            for title, key, digits in ROWS
        ],
        "",
        f"![Mosaic benchmark](figures/{figure.name})",
        "",
    ]
    table = "\n".join(lines)
    args.table.write_text(table)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled paired .h5mu (modalities rna, atac)")
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=["scmvp", "multivi", "knn"],
        help="scmvp_align1, scmvp_poisson: SCMVP with alignment_weight=1 or a Poisson ATAC likelihood (not run by "
        "default)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=None, help="SCMVP epochs per phase (default: its recipe)")
    parser.add_argument("--multivi-max-epochs", type=int, default=100)
    parser.add_argument("--n-cells", type=int, default=None, help="a seeded subsample of cells")
    parser.add_argument("--name", default=None, help="result name (default: the data file's stem)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "mosaic")
    parser.add_argument("--table", type=Path, default=ROOT / "docs" / "mosaic_table.md")
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="folder of pretrained SCMVP models: each SCMVP run loads its method and seed's model from there "
        "(pretraining and saving it first if it is missing) and trains only the joint phase",
    )
    parser.add_argument("--force", action="store_true", help="rerun runs whose results exist")
    parser.add_argument("--table-only", action="store_true", help="only rebuild the table and figure")
    parser.add_argument("--run", nargs=2, metavar=("METHOD", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.name = args.name or args.data.stem
    args.results.mkdir(parents=True, exist_ok=True)

    if args.run:
        method, seed = args.run[0], int(args.run[1])
        result = run(method, seed, args)
        result = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}
        path = args.results / f"{args.name}_{method}_seed{seed}.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result, indent=1), flush=True)
        return

    if not args.table_only:
        for seed in args.seeds:
            for method in args.methods:
                if (args.results / f"{args.name}_{method}_seed{seed}.json").exists() and not args.force:
                    continue
                print(f"== {method}, seed {seed}", flush=True)
                subprocess.run([sys.executable, __file__, *sys.argv[1:], "--run", method, str(seed)], check=True)
    skipped = {"--table-only", "--force"}
    args.command = " ".join(["python benchmarks/mosaic.py", *(a for a in sys.argv[1:] if a not in skipped)])
    runs = load_runs(args)
    figure = ROOT / "docs" / "figures" / f"{args.name}_mosaic.png"
    write_figure(runs, figure)
    print(write_table(args, runs, figure))


if __name__ == "__main__":
    main()
