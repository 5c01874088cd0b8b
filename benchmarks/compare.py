"""SCMVP against scvi-tools' MULTIVI and simple baselines on one labelled paired data set.

Every method trains on the same MuData in which a random 10% of the RNA and ATAC entries are hidden (set to zero),
with the same seed. It is then scored on its embedding (KMeans and best-NMI Leiden ARI/NMI, rescaled cell-type
silhouette) and its imputation, on all entries and on the hidden ones only (RNA Pearson on log1p(CP10k), ATAC
AUROC/AUPRC against binarised peaks, per cell and per feature). Each method runs in its own process so that its
time and peak memory are its own.

Usage::

    python benchmarks/compare.py                         # snare_cortex.h5mu, all methods
    python benchmarks/compare.py --n-cells 1000 --max-epochs 2 --multivi-max-epochs 2 --name smoke

Writes ``benchmarks/results/<name>_<method>.json``, the latents beside them (``.npz``, not versioned), the table
``docs/benchmarks.md`` and the UMAP figure ``docs/figures/<name>_umap.png``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("SCMVP_DATA_DIR", ROOT.parent / "shared" / "data")) / "snare_cortex.h5mu"
METHODS = ("scmvp", "multivi", "pca_lsi", "wnn", "mean")
KEPT_MARKER = "<!-- compare.py keeps what follows -->\n"
EMBEDDING_METHODS = ("scmvp", "multivi", "pca_lsi")
TITLES = {
    "scmvp": "SCMVP",
    "multivi": "MULTIVI",
    "pca_lsi": "PCA + LSI, kNN imputation",
    "wnn": "WNN (muon), graph imputation",
    "mean": "Population mean",
}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def read_data(args: argparse.Namespace):
    """The data set, or a seeded subsample of its cells."""
    import mudata as md

    mdata = md.read_h5mu(args.data)
    if args.n_cells is not None and args.n_cells < mdata.n_obs:
        keep = np.sort(np.random.default_rng(args.seed).choice(mdata.n_obs, args.n_cells, replace=False))
        mdata = mdata[keep].copy()
    return mdata


def hide_entries(mdata, args: argparse.Namespace):
    """The same data with the held-out RNA and ATAC entries set to zero, and the masks that hid them."""
    from scmvp_scvi.metrics import EntryMask

    masks = {mod: EntryMask(mdata[mod].n_vars, args.held_out, seed=args.seed) for mod in ("rna", "atac")}
    train = mdata.copy()
    for mod, mask in masks.items():
        train.mod[mod].X = mask.hide(mdata[mod].X)
    return train, masks


def epoch_timer():
    from lightning.pytorch.callbacks import Callback

    class EpochTimer(Callback):
        def __init__(self):
            self.seconds: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module):
            self._start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


def train_scmvp(train, args) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    import scmvp_scvi

    scmvp_scvi.SCMVP.setup_mudata(train, batch_key=args.batch_key)
    model = scmvp_scvi.SCMVP(train, **args.scmvp_kwargs)
    timer = epoch_timer()
    start = time.perf_counter()
    model.train(
        **{"max_epochs": args.max_epochs, "pretrain_epochs": args.max_epochs, **args.scmvp_train_kwargs},
        accelerator="cpu",
        enable_progress_bar=False,
        callbacks=[timer],
    )
    info = {
        "train_seconds": time.perf_counter() - start,
        "epochs": len(timer.seconds),
        "seconds_per_epoch": float(np.mean(timer.seconds)),
        "peak_rss_training_gb": peak_rss_gb(),
        "n_centroids": model.n_centroids,
        "gmm_clusters": model.get_cluster_assignments().astype(str).tolist(),
    }
    latent = model.get_latent_representation()
    rna = model.get_normalized_expression(return_numpy=True)
    atac = model.get_normalized_accessibility(return_numpy=True)
    return info, latent, rna, atac


def train_multivi(train, args) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    import scvi

    scvi.model.MULTIVI.setup_mudata(
        train, batch_key=args.batch_key, modalities={"rna_layer": "rna", "atac_layer": "atac"}
    )
    model = scvi.model.MULTIVI(train)
    timer = epoch_timer()
    start = time.perf_counter()
    model.train(max_epochs=args.multivi_max_epochs, accelerator="cpu", enable_progress_bar=False, callbacks=[timer])
    info = {
        "train_seconds": time.perf_counter() - start,
        "epochs": len(timer.seconds),
        "seconds_per_epoch": float(np.mean(timer.seconds)),
        "peak_rss_training_gb": peak_rss_gb(),
    }
    latent = model.get_latent_representation()
    rna = model.get_normalized_expression(return_numpy=True)
    atac = model.get_normalized_accessibility(return_numpy=True)
    return info, latent, rna, atac


def rna_pca(rna, seed: int) -> np.ndarray:
    """20 principal components of scaled log-normalised RNA counts (the AnnData is copied, not changed)."""
    import scanpy as sc

    rna = rna.copy()
    sc.pp.normalize_total(rna, target_sum=1e4)
    sc.pp.log1p(rna)
    sc.pp.scale(rna, max_value=10)
    sc.tl.pca(rna, n_comps=20, random_state=seed)
    return rna.obsm["X_pca"]


def atac_lsi(atac) -> np.ndarray:
    """LSI components 2-21 of TF-IDF ATAC counts (the AnnData is copied, not changed)."""
    import muon as mu

    atac = atac.copy()
    mu.atac.pp.tfidf(atac, scale_factor=1e4)
    mu.atac.tl.lsi(atac, n_comps=21)
    return atac.obsm["X_lsi"][:, 1:]  # the first LSI component follows sequencing depth


def side_by_side(blocks: list[np.ndarray]) -> np.ndarray:
    """Embeddings of the same cells side by side, each scaled to unit total variance so that neither dominates."""
    return np.hstack([block / np.sqrt(block.var(axis=0).sum()) for block in blocks]).astype(np.float32)


def pca_lsi(train, args) -> np.ndarray:
    """20 PCs of scaled log-normalised RNA beside LSI components 2-21 of TF-IDF ATAC, each block of unit scale."""
    return side_by_side([rna_pca(train["rna"], args.seed), atac_lsi(train["atac"])])


def train_baseline(train, args) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    from scmvp_scvi.metrics import knn_imputation

    start = time.perf_counter()
    latent = pca_lsi(train, args)
    rna = knn_imputation(train["rna"].X, latent, "rna")
    atac = knn_imputation(train["atac"].X, latent, "atac")
    info = {"train_seconds": time.perf_counter() - start, "peak_rss_training_gb": peak_rss_gb()}
    return info, latent, rna, atac


def wnn_graph(train, joint: np.ndarray, seed: int):
    """muon's weighted nearest-neighbour graph of the PCA (RNA) and LSI (ATAC) blocks of ``pca_lsi``."""
    import muon as mu
    import scanpy as sc

    rna, atac = train["rna"].copy(), train["atac"].copy()
    rna.obsm["X_pca"], atac.obsm["X_lsi"] = joint[:, :20], joint[:, 20:]
    for adata, rep in ((rna, "X_pca"), (atac, "X_lsi")):
        sc.pp.neighbors(adata, use_rep=rep, n_neighbors=15, transformer="sklearn", random_state=seed)
    paired = mu.MuData({"rna": rna, "atac": atac})
    mu.pp.neighbors(paired, key_added="wnn", random_state=seed)
    return paired.obsp["wnn_connectivities"]


def train_wnn(train, args) -> tuple[dict, None, np.ndarray, np.ndarray]:
    """Leiden on muon's WNN graph, and imputation by averaging each cell's WNN neighbours."""
    from scipy import sparse

    from scmvp_scvi.metrics import graph_leiden_scores
    from scmvp_scvi.metrics._baselines import _profiles

    start = time.perf_counter()
    connectivities = wnn_graph(train, pca_lsi(train, args), args.seed)
    graph = sparse.csr_matrix(connectivities)
    graph.setdiag(0)  # a cell's own held-out entries must not leak into its imputation
    graph.eliminate_zeros()
    weights = sparse.diags(1.0 / np.maximum(np.asarray(graph.sum(1)).ravel(), 1e-12)) @ graph
    imputed = [(weights @ _profiles(train[mod].X, mod)).toarray() for mod in ("rna", "atac")]
    info = {"train_seconds": time.perf_counter() - start, "peak_rss_training_gb": peak_rss_gb()}
    labels = train.obs[args.label_key].astype(str).to_numpy()  # hiding entries leaves obs as it was
    info.update(graph_leiden_scores(connectivities, labels, seed=args.seed))
    return info, None, *imputed


def train_mean(train, args) -> tuple[dict, None, np.ndarray, np.ndarray]:
    from scmvp_scvi.metrics import mean_imputation

    return {}, None, mean_imputation(train["rna"].X, "rna"), mean_imputation(train["atac"].X, "atac")


RUNNERS = {
    "scmvp": train_scmvp,
    "multivi": train_multivi,
    "pca_lsi": train_baseline,
    "wnn": train_wnn,
    "mean": train_mean,
}


def run_method(method: str, args: argparse.Namespace) -> None:
    """Train one method, score it and write its JSON (and latent); runs in a process of its own."""
    import scvi
    import torch

    from scmvp_scvi.metrics import agreement, atac_imputation_scores, clustering_report, rna_imputation_scores

    scvi.settings.seed = args.seed
    mdata = read_data(args)
    train, masks = hide_entries(mdata, args)
    labels = mdata.obs[args.label_key].astype(str).to_numpy()
    info, latent, rna, atac = RUNNERS[method](train, args)
    result = {"method": method, **info}
    if method == "scmvp" and (args.scmvp_kwargs or args.scmvp_train_kwargs):
        result["scmvp_arguments"] = {**args.scmvp_kwargs, **args.scmvp_train_kwargs}
    if latent is not None:
        result.update(clustering_report(latent, labels, seed=args.seed))
        np.savez_compressed(args.results / f"{args.name}_{method}_latent.npz", latent=latent)
    if "gmm_clusters" in result:
        result.update(agreement(labels, result.pop("gmm_clusters"), "gmm_"))
    start = time.perf_counter()
    for prefix, held_out in (("", None), ("heldout_", masks)):
        result.update(rna_imputation_scores(mdata["rna"].X, rna, held_out and held_out["rna"], prefix))
        result.update(atac_imputation_scores(mdata["atac"].X, atac, held_out and held_out["atac"], prefix))
    result["scoring_seconds"] = time.perf_counter() - start
    result["peak_rss_gb"] = peak_rss_gb()
    result["torch_threads"] = torch.get_num_threads()
    result["date"] = datetime.date.today().isoformat()
    result = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}
    (args.results / f"{args.name}_{method}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2), flush=True)


def umap_figure(args: argparse.Namespace, labels: np.ndarray, methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc
    from anndata import AnnData

    methods = [m for m in methods if m in EMBEDDING_METHODS]
    if not methods:
        return
    missing = [m for m in methods if not (args.results / f"{args.name}_{m}_latent.npz").exists()]
    if missing:
        # latents are not versioned: after a fresh clone, re-running one method must not drop the others' panels
        print(f"Keeping {path}: no saved latent of {missing} in {args.results}; run them again to redraw it.")
        return
    fig, axes = plt.subplots(1, len(methods), figsize=(5.2 * len(methods), 5), squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        adata = AnnData(np.load(args.results / f"{args.name}_{method}_latent.npz")["latent"])
        adata.obs["cell type"] = labels
        sc.pp.neighbors(adata, use_rep="X", n_neighbors=15, transformer="sklearn", random_state=args.seed)
        sc.tl.umap(adata, random_state=args.seed)
        sc.pl.umap(adata, color="cell type", ax=ax, show=False, title=TITLES[method], frameon=False, legend_loc=None)
    handles = [
        plt.Line2D([], [], marker="o", linestyle="", color=color, label=name)
        for name, color in zip(adata.obs["cell type"].cat.categories, adata.uns["cell type_colors"], strict=True)
    ]
    fig.legend(handles=handles, loc="center right", frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(result: dict, *keys: str) -> str:
    values = [result.get(key) for key in keys]
    if all(v is None for v in values):
        return "-"
    return " / ".join("-" if v is None or np.isnan(v) else f"{v:.3f}" for v in values)


ROWS = [
    ("KMeans ARI / NMI", lambda r: _fmt(r, "kmeans_ari", "kmeans_nmi")),
    ("Leiden (best NMI) ARI / NMI", lambda r: _fmt(r, "leiden_ari", "leiden_nmi")),
    ("Cell-type silhouette (rescaled)", lambda r: _fmt(r, "silhouette")),
    ("SCMVP GMM clusters ARI / NMI", lambda r: _fmt(r, "gmm_ari", "gmm_nmi")),
    ("RNA Pearson per cell / per gene, all entries", lambda r: _fmt(r, "rna_cell_pearson", "rna_gene_pearson")),
    (
        "RNA Pearson per cell / per gene, held-out entries",
        lambda r: _fmt(r, "heldout_rna_cell_pearson", "heldout_rna_gene_pearson"),
    ),
    ("ATAC AUROC / AUPRC per cell, all entries", lambda r: _fmt(r, "atac_cell_auroc", "atac_cell_auprc")),
    ("ATAC AUROC / AUPRC per peak, all entries", lambda r: _fmt(r, "atac_peak_auroc", "atac_peak_auprc")),
    (
        "ATAC AUROC / AUPRC per cell, held-out entries",
        lambda r: _fmt(r, "heldout_atac_cell_auroc", "heldout_atac_cell_auprc"),
    ),
    (
        "ATAC AUROC / AUPRC per peak, held-out entries",
        lambda r: _fmt(r, "heldout_atac_peak_auroc", "heldout_atac_peak_auprc"),
    ),
    ("Epochs", lambda r: str(r["epochs"]) if "epochs" in r else "-"),
    ("Seconds per epoch", lambda r: f"{r['seconds_per_epoch']:.1f}" if "seconds_per_epoch" in r else "-"),
    ("Training time", lambda r: f"{r['train_seconds'] / 60:.1f} min" if "train_seconds" in r else "-"),
    ("Peak memory, training (RSS)", lambda r: f"{r['peak_rss_training_gb']:.2f} GB" if "train_seconds" in r else "-"),
]


def write_table(args: argparse.Namespace, meta: dict, results: list[dict], figure: Path) -> None:
    lines = [
        f"## {meta['data']}: {meta['n_cells']:,} cells, {meta['n_genes']:,} genes, {meta['n_peaks']:,} peaks, "
        f"{meta['n_labels']} cell types",
        "",
        f"CPU only ({meta['machine']}), seed {args.seed}; every method trains on the same data with "
        f"{args.held_out:.0%} of the RNA and ATAC entries hidden. SCMVP runs its default recipe "
        f"({meta['scmvp_epochs']}); MULTIVI runs its default recipe (early stopping on a 10% validation split) "
        f"capped at {args.multivi_max_epochs} epochs to fit the time budget (its own default cap is 500); the "
        "Epochs row shows whether early stopping ended it before the cap. One seed: two runs of the same method "
        "differ by a few hundredths in ARI, so this table ranks nothing on its own; the "
        "[ablation page](ablation.md) compares SCMVP, MULTIVI, PCA + LSI and WNN over 3 seeds with their spread. "
        "Produced by:",
        "",
        "```bash",
        meta["command"],
        "```",
        "",
        *_run_dates(results),
        "| metric | " + " | ".join(TITLES[r["method"]] for r in results) + " |",
        "|---|" + "---|" * len(results),
        *[f"| {name} | " + " | ".join(cell(r) for r in results) + " |" for name, cell in ROWS],
        "",
        f"![UMAP of each embedding, coloured by cell type](figures/{figure.name})",
        "",
    ]
    section = "\n".join(lines)
    header = (
        "# Benchmarks\n\n"
        "Scores follow the evaluation protocol. Embedding: KMeans with k = number of cell types (10 restarts); "
        "Leiden on a 15-neighbour graph over resolutions 0.1-2.0, keeping the best NMI; cell-type silhouette "
        "rescaled to [0, 1]. Imputation: RNA Pearson correlation between imputed and observed log1p(CP10k) values "
        "(imputations are divided by their cell's total first, so any per-cell scale scores the same), per cell "
        "across genes and per gene across cells; ATAC AUROC and AUPRC of imputed accessibility against binarised "
        "observed peaks, per cell and per peak. 'All entries' includes what the model saw in training; "
        "'held-out entries' scores only the hidden ones against their true values. Cells or features without "
        "variance (or without both open and closed entries) are skipped: the population mean has no per-gene "
        "score, and its per-peak AUROC is 0.5 by construction. The PCA + LSI baseline imputes each cell with the "
        "mean profile of its 15 nearest other cells in that embedding; WNN (muon's weighted nearest neighbours of "
        "those RNA and ATAC blocks) is a graph, so it has Leiden scores only, and imputes each cell with the "
        "weighted mean profile of its WNN neighbours. Peak memory is the maximum resident set "
        "size of the method's own process after training, data loading included. Per cell, the held-out ATAC "
        "AUPRC of every method is close to the population mean's and can fall below it: ranking a cell's hidden "
        "peaks by how often each peak is open overall is already a strong prediction, and the per-peak scores are "
        "the ones that show what a model learnt about each cell.\n\n"
    )
    args.table.parent.mkdir(parents=True, exist_ok=True)
    # sections written by other benchmarks follow a marker; keep them
    kept = args.table.read_text().partition(KEPT_MARKER)[2] if args.table.exists() else ""
    args.table.write_text(header + section + (f"\n{KEPT_MARKER}{kept}" if kept else ""))


def _run_dates(results: list[dict]) -> list[str]:
    """A sentence saying which methods ran when, if they did not all run together (timings then compare runs)."""
    dates: dict[str, list[str]] = {}
    for result in results:
        dates.setdefault(result.get("date", "an earlier run"), []).append(TITLES[result["method"]])
    if len(dates) < 2:
        return []
    runs = "; ".join(f"{', '.join(methods)}: {date}" for date, methods in sorted(dates.items()))
    return [
        "Each method ran in a process of its own, with the same command, data and seed, but not all at the same "
        f"time ({runs}); times and memory compare across those runs.",
        "",
    ]


def _without_methods(argv: list[str]) -> list[str]:
    """The arguments without ``--methods ...`` and ``--table-only`` (the table reports all methods run so far)."""
    kept, skipping = [], False
    for token in argv:
        if token.startswith("--"):
            skipping = token == "--methods"
        if not skipping and token != "--table-only":
            kept.append(token)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled paired .h5mu (modalities rna, atac)")
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--batch-key", default=None, help="obs column used as batch covariate by both models")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--max-epochs", type=int, default=None, help="SCMVP epochs per phase (default: its recipe)")
    parser.add_argument("--scmvp-kwargs", type=json.loads, default={}, help="JSON of SCMVP(...) arguments")
    parser.add_argument("--scmvp-train-kwargs", type=json.loads, default={}, help="JSON of SCMVP.train arguments")
    parser.add_argument("--multivi-max-epochs", type=int, default=100)
    parser.add_argument("--held-out", type=float, default=0.1, help="fraction of entries hidden from training")
    parser.add_argument("--n-cells", type=int, default=None, help="score a seeded subsample of cells")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None, help="result name (default: the data file's stem)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--table", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--table-only", action="store_true", help="only rebuild the table from the result files")
    parser.add_argument("--run-method", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.name = args.name or args.data.stem
    args.results.mkdir(parents=True, exist_ok=True)
    if args.run_method:
        run_method(args.run_method, args)
        return

    for method in [] if args.table_only else args.methods:
        print(f"== {method}", flush=True)
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--run-method", method], check=True)

    import mudata as md
    import scvi
    import torch

    from scmvp_scvi import __version__
    from scmvp_scvi._model import default_epochs

    mdata = read_data(args)  # labels and sizes only: no masking needed
    labels = mdata.obs[args.label_key].astype(str).to_numpy()
    figure = args.table.parent / "figures" / f"{args.name}_umap.png"
    # the table and figure cover every method with a result, so one method can be re-run on its own
    methods = [m for m in METHODS if (args.results / f"{args.name}_{m}.json").exists()]
    umap_figure(args, labels, methods, figure)
    epochs = args.max_epochs or default_epochs(mdata.n_obs)
    meta = {
        "data": args.data.name + ("" if args.n_cells is None else f" (subsample of {args.n_cells} cells)"),
        "n_cells": mdata.n_obs,
        "n_genes": mdata["rna"].n_vars,
        "n_peaks": mdata["atac"].n_vars,
        "n_labels": len(np.unique(labels)),
        "scmvp_epochs": f"{epochs} pretraining + {epochs} joint epochs",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "versions": {"scmvp_scvi": __version__, "scvi-tools": scvi.__version__, "mudata": md.__version__},
        "command": " ".join(["python benchmarks/compare.py", *_without_methods(sys.argv[1:])]),
    }
    results = [json.loads((args.results / f"{args.name}_{m}.json").read_text()) for m in methods]
    (args.results / f"{args.name}_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_table(args, meta, results, figure)
    print(args.table.read_text())


if __name__ == "__main__":
    main()
