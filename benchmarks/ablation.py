"""Ablation harness: what each part of SCMVP and each default buys, over several seeds, with peers beside it.

Every variant trains on the same data as ``compare.py`` (a random 10% of the RNA and ATAC entries hidden, per
seed) and is scored twice: after pretraining (when the mixture prior is initialised) and after joint training.
Each time the joint, RNA-only and ATAC-only latents are clustered (KMeans with k = number of cell types, and the
best-NMI Leiden over resolutions 0.1-2.0) and their active dimensions counted (posterior-mean variance across
cells above 0.01); after joint training the mixture clusters are scored and the held-out entries imputed. The
baselines (PCA of RNA, LSI of ATAC, PCA + LSI and muon's weighted nearest neighbours) and MULTIVI (``--variants
multivi``: its default recipe, capped at 100 epochs as in ``compare.py``) are scored on the same data per seed.
Each (variant, seed) runs in a process of its own.

Usage::

    python benchmarks/ablation.py                      # both recipes with either balance term, baselines; seeds 0-2
    python benchmarks/ablation.py --variants balanced_no_cycle balanced_counts_input   # single-part ablations
    python benchmarks/ablation.py --variants multivi                # MULTIVI on the same data and seeds
    python benchmarks/ablation.py --n-cells 1500 --epochs 3 --name smoke --seeds 0 --variants balanced
    python benchmarks/ablation.py --table-only                      # rebuild the table from the JSON files

Runs go one at a time: two torch processes on 2 cores oversubscribe their threads and each runs several times
slower. Writes ``benchmarks/results/ablation/<name>_<variant>_seed<k>.json`` and the tables
``docs/ablation_table.md`` (included by ``docs/ablation.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare import (  # noqa: E402
    DEFAULT_DATA,
    hide_entries,
    pca_lsi,
    read_data,
    side_by_side,
    train_multivi,
    wnn_graph,
)

ROOT = HERE.parent
HALF = "half of the joint epochs"
EPOCHS = "epochs_per_phase"  # a variant's own epochs per phase, in place of --epochs and the model's recipe

# name -> (what it changes, SCMVP(...) arguments, SCMVP.train(...) arguments); HALF is resolved per run
# the ATAC likelihood is pinned so that a variant keeps its meaning when the package default changes
REFERENCE_MODEL = {
    "encoder_input": "counts",
    "rna_weight": 3.0,
    "atac_weight": 0.1,
    "balance_target": "uniform",
    "atac_likelihood": "zip",
}
BALANCED_MODEL = {
    "encoder_input": "normalized",
    "rna_weight": 1.0,
    "atac_weight": 1.0,
    "balance_target": "uniform",
    "atac_likelihood": "zip",
}
# K from Leiden at resolution 1.0, the original's and the package default before 0.4
BALANCED_TRAIN = {
    "n_epochs_kl_warmup": 0,
    "n_epochs_cluster_warmup": HALF,
    "gmm_variance": "posterior",
    "leiden_resolution": 1.0,
}
ORIGINAL_SWITCH = {
    "n_epochs_kl_warmup": HALF,
    "n_epochs_cluster_warmup": 0,
    "gmm_variance": "means",
    "leiden_resolution": 1.0,
}
VARIANTS: dict[str, tuple[str, dict, dict]] = {
    "reference": (
        "the original scMVP recipe: log1p-count inputs, weights RNA 3.0 / ATAC 0.1, a balance term that favours "
        "equal clusters, mixture variances from the spread of the posterior means, KL warm-up restarted and "
        "cluster terms at full weight at the switch",
        REFERENCE_MODEL,
        ORIGINAL_SWITCH,
    ),
    "balanced": (
        "normalised encoder inputs (log CP10k RNA, log TF-IDF ATAC), weights RNA 1.0 / ATAC 1.0, mixture "
        "components matched to the posteriors, KL kept at full weight and cluster terms warmed up over half of "
        "joint training",
        BALANCED_MODEL,
        BALANCED_TRAIN,
    ),
    "reference_gentle_switch": (
        "reference, but the balanced recipe's switch to the mixture prior (posterior-matched components, KL kept "
        "at full weight, cluster terms warmed up)",
        REFERENCE_MODEL,
        BALANCED_TRAIN,
    ),
    "reference_prior_balance": (
        "reference, but the balance term pulls the cluster marginal towards the mixture weights, not equal sizes "
        "(the package defaults before the balanced recipe)",
        {**REFERENCE_MODEL, "balance_target": "prior"},
        ORIGINAL_SWITCH,
    ),
    "balanced_reference_weights": (
        "balanced, but weights RNA 3.0 / ATAC 0.1",
        {**BALANCED_MODEL, "rna_weight": 3.0, "atac_weight": 0.1},
        BALANCED_TRAIN,
    ),
    "balanced_counts_input": (
        "balanced, but log1p-count encoder inputs",
        {**BALANCED_MODEL, "encoder_input": "counts"},
        BALANCED_TRAIN,
    ),
    "balanced_original_switch": (
        "balanced, but the original switch to the mixture prior",
        BALANCED_MODEL,
        ORIGINAL_SWITCH,
    ),
    "balanced_no_cluster_terms": (
        "balanced, without the cluster terms (cluster_weight 0)",
        {**BALANCED_MODEL, "cluster_weight": 0.0},
        BALANCED_TRAIN,
    ),
    "balanced_prior_balance": (
        "the package defaults of 0.2 (zero-inflated Poisson ATAC likelihood): balanced, but the balance term "
        "pulls the cluster marginal towards the mixture weights, not equal sizes",
        {**BALANCED_MODEL, "balance_target": "prior"},
        BALANCED_TRAIN,
    ),
    "balanced_prior_balance_single": (
        "balanced_prior_balance, and the RNA-only and ATAC-only VAE terms kept in joint training",
        {**BALANCED_MODEL, "balance_target": "prior", "single_modality_weight": 1.0},
        BALANCED_TRAIN,
    ),
    "balanced_prior_balance_single_joint_atac01": (
        "balanced_prior_balance_single, but ATAC weight 0.1 for the joint posterior's reconstruction in joint "
        "training (the ATAC-only terms keep weight 1)",
        {**BALANCED_MODEL, "balance_target": "prior", "single_modality_weight": 1.0, "joint_atac_weight": 0.1},
        BALANCED_TRAIN,
    ),
    "balanced_prior_balance_single_counts_input": (
        "balanced_prior_balance_single, but log1p-count encoder inputs",
        {**BALANCED_MODEL, "encoder_input": "counts", "balance_target": "prior", "single_modality_weight": 1.0},
        BALANCED_TRAIN,
    ),
    "balanced_prior_balance_single_reference_weights": (
        "balanced_prior_balance_single, but weights RNA 3.0 / ATAC 0.1",
        {
            **BALANCED_MODEL,
            "rna_weight": 3.0,
            "atac_weight": 0.1,
            "balance_target": "prior",
            "single_modality_weight": 1.0,
        },
        BALANCED_TRAIN,
    ),
    "balanced_prior_balance_batch128": (
        "balanced_prior_balance, but minibatches of 128 cells (half the optimisation steps per epoch)",
        {**BALANCED_MODEL, "balance_target": "prior"},
        {**BALANCED_TRAIN, "batch_size": 128},
    ),
    "balanced_prior_balance_poisson": (
        "the package defaults on paired data of 0.3: balanced_prior_balance, but a Poisson likelihood for ATAC "
        "instead of the zero-inflated Poisson (no zero-inflation head: half the decoder's peak outputs)",
        {**BALANCED_MODEL, "balance_target": "prior", "atac_likelihood": "poisson"},
        BALANCED_TRAIN,
    ),
    "balanced_prior_balance_poisson_10_epochs": (
        "balanced_prior_balance_poisson, but 10 pretraining + 10 joint epochs",
        {**BALANCED_MODEL, "balance_target": "prior", "atac_likelihood": "poisson"},
        {**BALANCED_TRAIN, EPOCHS: 10},
    ),
    "balanced_prior_balance_poisson_resolution_05": (
        "the package defaults on paired data from 0.4: balanced_prior_balance_poisson, but K from Leiden clusters "
        "at resolution 0.5 instead of 1.0",
        {**BALANCED_MODEL, "balance_target": "prior", "atac_likelihood": "poisson"},
        {**BALANCED_TRAIN, "leiden_resolution": 0.5},
    ),
    "balanced_prior_balance_poisson_resolution_07": (
        "balanced_prior_balance_poisson, but K from Leiden clusters at resolution 0.7 instead of 1.0",
        {**BALANCED_MODEL, "balance_target": "prior", "atac_likelihood": "poisson"},
        {**BALANCED_TRAIN, "leiden_resolution": 0.7},
    ),
    "balanced_no_cycle": (
        "balanced, without the cycle KL (cycle_kl_weight 0)",
        {**BALANCED_MODEL, "cycle_kl_weight": 0.0},
        BALANCED_TRAIN,
    ),
}
DEFAULT_VARIANTS = ["reference", "balanced", "reference_prior_balance", "balanced_prior_balance", "baselines"]
BASELINES = ("pca_rna", "lsi_atac", "pca_lsi", "wnn")
BASELINE_TITLES = {
    "pca_rna": "PCA (RNA)",
    "lsi_atac": "LSI (ATAC)",
    "pca_lsi": "PCA + LSI",
    "wnn": "WNN (muon)",
}


def _data(args: argparse.Namespace, seed: int):
    """The data (the same subsample for every seed), and its copy with this seed's held-out entries hidden."""
    mdata = read_data(argparse.Namespace(data=args.data, n_cells=args.n_cells, seed=0))
    train, masks = hide_entries(mdata, argparse.Namespace(held_out=args.held_out, seed=seed))
    return mdata, train, masks


def _resolve(train_kwargs: dict, epochs: int) -> dict:
    return {k: (max(1, epochs // 2) if v == HALF else v) for k, v in train_kwargs.items()}


def active_dimensions(means: np.ndarray, threshold: float = 0.01) -> int:
    """Latent dimensions whose posterior mean varies across cells (variance above ``threshold``)."""
    return int((np.asarray(means).var(axis=0) > threshold).sum())


def _cluster_scores(latent: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, float]:
    from scmvp_scvi.metrics import kmeans_scores, leiden_scores

    scores = {**kmeans_scores(latent, labels, seed), **leiden_scores(latent, labels, seed=seed)}
    return {k: scores[k] for k in ("kmeans_ari", "kmeans_nmi", "leiden_ari", "leiden_nmi", "leiden_n_clusters")}


def _latent_scores(latent: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, float]:
    return {**_cluster_scores(latent, labels, seed), "active_dims": active_dimensions(latent)}


def _latent_report(model, labels: np.ndarray, seed: int) -> dict[str, dict]:
    latents = {m: model.get_latent_representation(modality=m, key_added=None) for m in ("joint", "rna", "atac")}
    report = {modality: _latent_scores(latent, labels, seed) for modality, latent in latents.items()}
    # the single-modality latents side by side, as PCA + LSI is built: what the fusion could reach
    report["side_by_side"] = _cluster_scores(side_by_side([latents["rna"], latents["atac"]]), labels, seed)
    return report


# SCMVP arguments that act only in joint training (module attribute or key of module.weights)
JOINT_OPTIONS = {
    "balance_target": "balance_target",
    "cluster_weight": "cluster",
    "cycle_kl_weight": "cycle_kl",
    "single_modality_weight": "single",
    "joint_atac_weight": "joint_atac",
}


# SCMVP.train options of the mixture initialisation (-> SCMVP.initialize_gmm argument) and of joint training only
MIXTURE_OPTIONS = {"leiden_resolution": "resolution", "gmm_variance": "variance", "gmm_max_cells": "max_cells"}
JOINT_TRAIN_OPTIONS = {"n_epochs_kl_warmup", "n_epochs_cluster_warmup", *MIXTURE_OPTIONS}


def _pretraining_options(variant: str) -> tuple[dict, dict]:
    """The model and training options that shape pretraining (two variants that share them pretrain alike)."""
    _, model_kwargs, train_kwargs = VARIANTS[variant]
    return (
        {k: v for k, v in model_kwargs.items() if k not in JOINT_OPTIONS},
        {k: v for k, v in train_kwargs.items() if k not in JOINT_TRAIN_OPTIONS},
    )


def _pretrained_source(variant: str, seed: int, args: argparse.Namespace) -> str | None:
    """A variant whose saved pretrained model (``--from-pretrained``) this variant can start joint training from."""
    if args.from_pretrained is None:
        return None
    for path in sorted(args.from_pretrained.glob(f"*_seed{seed}_pretrained")):
        source = path.name.removesuffix(f"_seed{seed}_pretrained")
        if source in VARIANTS and _pretraining_options(source) == _pretraining_options(variant):
            return source
    return None


def _set_joint_options(model, model_kwargs: dict) -> None:
    """Give a loaded model this variant's joint-training options (also in what it saves)."""
    module = model.module
    for name, target in JOINT_OPTIONS.items():
        if name not in model_kwargs:
            continue
        if target in module.weights:
            module.weights[target] = model_kwargs[name]
        else:
            setattr(module, target, model_kwargs[name])
        for params in model.init_params_.values():
            if name in params:
                params[name] = model_kwargs[name]


def reinitialise_mixture(model, n_centroids: int | None, **options) -> None:
    """Initialise a loaded pretrained model's mixture prior again (``SCMVP.initialize_gmm`` ``options``).

    A saved model holds the mixture of the run that saved it, and its K resolved; ``n_centroids`` is that of the
    model's options again (``None``: K from Leiden). The initialisation is deterministic, so with the same options
    this reproduces the saved mixture.
    """
    if n_centroids is not None:  # as in training, a fixed K ignores the Leiden resolution
        options.pop("resolution", None)
    model.initialize_gmm(n_centroids="leiden" if n_centroids is None else n_centroids, **options)


def _initialise_mixture(model, model_kwargs: dict, train_kwargs: dict) -> None:
    """Initialise a loaded pretrained model's mixture prior again, with this variant's options."""
    options = {MIXTURE_OPTIONS[k]: v for k, v in train_kwargs.items() if k in MIXTURE_OPTIONS}
    batch_size = max(train_kwargs.get("batch_size", 64), 256)
    reinitialise_mixture(model, model_kwargs.get("n_centroids"), batch_size=batch_size, **options)


def _pretrain_seconds(source: str, seed: int, args: argparse.Namespace) -> float:
    """The pretraining time of the run that saved the model (NaN if its result file is gone)."""
    path = args.results / f"{args.name}_{source}_seed{seed}.json"
    return json.loads(path.read_text())["pretrain_seconds"] if path.exists() else float("nan")


def _heldout_scores(mdata, masks, rna: np.ndarray, atac: np.ndarray) -> dict[str, float]:
    """Scores of imputed RNA and ATAC profiles on the held-out entries."""
    from scmvp_scvi.metrics import atac_imputation_scores, rna_imputation_scores

    return {
        **rna_imputation_scores(mdata["rna"].X, rna, masks["rna"], "heldout_"),
        **atac_imputation_scores(mdata["atac"].X, atac, masks["atac"], "heldout_"),
    }


def _imputation(model, mdata, masks) -> dict[str, float]:
    """Scores of the model's normalised expression and accessibility on the held-out entries."""
    rna = model.get_normalized_expression(return_numpy=True)
    atac = model.get_normalized_accessibility(return_numpy=True)
    return _heldout_scores(mdata, masks, rna, atac)


def _pretrained_imputation(model, mdata, masks) -> dict[str, float]:
    """Imputation as pretraining trained the decoder: with the just-initialised mixture off, the gate is 0.5."""
    model.module.gmm_initialized.fill_(False)
    try:
        return _imputation(model, mdata, masks)
    finally:
        model.module.gmm_initialized.fill_(True)


def _mixture_report(model, labels: np.ndarray, fine_labels: np.ndarray | None) -> dict:
    """Scores of the mixture clusters against the labels (and the finer labels, if any), and their sizes."""
    from scmvp_scvi.metrics import agreement

    clusters = model.get_cluster_assignments(key_added=None)
    sizes = np.bincount(clusters, minlength=model.n_centroids)
    return {
        **agreement(labels, clusters),
        **(agreement(fine_labels, clusters, "fine_") if fine_labels is not None else {}),
        "n_components": int(model.n_centroids),
        "n_used": int((sizes > 0).sum()),
        "smallest_used": int(sizes[sizes > 0].min()),
    }


def run_variant(variant: str, seed: int, args: argparse.Namespace) -> dict:
    """Train one variant with one seed and score it after each phase."""
    import scvi

    import scmvp_scvi
    from scmvp_scvi._model import default_epochs

    _, model_kwargs, train_kwargs = VARIANTS[variant]
    train_kwargs = dict(train_kwargs)
    variant_epochs = train_kwargs.pop(EPOCHS, None)
    scvi.settings.seed = seed
    mdata, train, masks = _data(args, seed)
    labels = mdata.obs[args.label_key].astype(str).to_numpy()
    fine = args.fine_label_key
    fine_labels = mdata.obs[fine].astype(str).to_numpy() if fine in mdata.obs else None
    epochs = variant_epochs or args.epochs or default_epochs(mdata.n_obs)
    common = {"accelerator": "cpu", "enable_progress_bar": False, **_resolve(train_kwargs, epochs)}

    scmvp_scvi.SCMVP.setup_mudata(train)
    source = _pretrained_source(variant, seed, args)
    if source is None:
        model = scmvp_scvi.SCMVP(train, **model_kwargs)
        start = time.perf_counter()
        model.train(max_epochs=0, pretrain_epochs=epochs, **common)  # pretraining and mixture initialisation
        pretrain_seconds = time.perf_counter() - start
    else:  # the same pretraining, run by another variant: only the joint-phase options differ
        model = scmvp_scvi.SCMVP.load(args.from_pretrained / f"{source}_seed{seed}_pretrained", adata=train)
        _set_joint_options(model, model_kwargs)
        _initialise_mixture(model, model_kwargs, train_kwargs)
        pretrain_seconds = _pretrain_seconds(source, seed, args)
    load = [os.getloadavg()[0]]  # a load well above the torch threads means another job shared the cores
    pretrained = _latent_report(model, labels, seed)
    pretrained["mixture"] = _mixture_report(model, labels, fine_labels)  # the components just initialised
    pretrained_imputation = _pretrained_imputation(model, mdata, masks)
    if args.save_models:
        model.save(args.save_models / f"{variant}_seed{seed}_pretrained", overwrite=True)
    start = time.perf_counter()
    model.train(max_epochs=epochs, **common)
    joint_seconds = time.perf_counter() - start
    load.append(os.getloadavg()[0])
    final = _latent_report(model, labels, seed)
    if args.save_models:
        model.save(args.save_models / f"{variant}_seed{seed}_final", overwrite=True)

    final["mixture"] = _mixture_report(model, labels, fine_labels)
    imputation = _imputation(model, mdata, masks)
    return {
        "variant": variant,
        "seed": seed,
        "pretrained_by": source or variant,
        "n_cells": int(mdata.n_obs),
        "epochs_per_phase": epochs,
        "pretrain_seconds": pretrain_seconds,
        "joint_seconds": joint_seconds,
        "load_after_each_phase": load,
        "pretrained": pretrained,
        "pretrained_imputation": pretrained_imputation,
        "final": final,
        "imputation": imputation,
    }


def rescore_mixture(variant: str, seed: int, args: argparse.Namespace) -> None:
    """Score the mixture of a run's saved models (``--save-models``) again, into its result file.

    For results written before the mixture was scored at the switch and against the finer labels.
    """
    import scmvp_scvi

    path = args.results / f"{args.name}_{variant}_seed{seed}.json"
    result = json.loads(path.read_text())
    mdata, train, _ = _data(args, seed)
    labels = mdata.obs[args.label_key].astype(str).to_numpy()
    fine = args.fine_label_key
    fine_labels = mdata.obs[fine].astype(str).to_numpy() if fine in mdata.obs else None
    scmvp_scvi.SCMVP.setup_mudata(train)
    for phase in ("pretrained", "final"):
        model = scmvp_scvi.SCMVP.load(args.rescore_mixture / f"{variant}_seed{seed}_{phase}", adata=train)
        result[phase]["mixture"] = _mixture_report(model, labels, fine_labels)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"rescored {path}", flush=True)


def run_baselines(seed: int, args: argparse.Namespace) -> dict:
    """PCA, LSI, PCA + LSI and WNN on the same training data as the variants."""
    from scmvp_scvi.metrics import graph_leiden_scores

    mdata, train, masks = _data(args, seed)
    labels = mdata.obs[args.label_key].astype(str).to_numpy()
    joint = pca_lsi(train, argparse.Namespace(seed=seed))
    report = {"pca_rna": joint[:, :20], "lsi_atac": joint[:, 20:], "pca_lsi": joint}
    report = {name: _cluster_scores(latent, labels, seed) for name, latent in report.items()}

    start = time.perf_counter()
    wnn = graph_leiden_scores(wnn_graph(train, joint, seed), labels, seed=seed)
    report["wnn"] = {k: wnn[k] for k in ("leiden_ari", "leiden_nmi", "leiden_n_clusters")}
    report["wnn"]["seconds"] = time.perf_counter() - start
    result = {"variant": "baselines", "seed": seed, "n_cells": int(mdata.n_obs), "baselines": report}
    return {**result, "imputation_baselines": imputation_baselines(mdata, train, masks, joint)}


def run_multivi(seed: int, args: argparse.Namespace) -> dict:
    """MULTIVI's default recipe on the same training data as the variants, scored as they are."""
    import scvi

    scvi.settings.seed = seed
    mdata, train, masks = _data(args, seed)
    labels = mdata.obs[args.label_key].astype(str).to_numpy()
    info, latent, rna, atac = train_multivi(
        train, argparse.Namespace(batch_key=None, multivi_max_epochs=args.multivi_max_epochs)
    )
    return {
        "variant": "multivi",
        "seed": seed,
        "n_cells": int(mdata.n_obs),
        "epochs": info["epochs"],
        "max_epochs": args.multivi_max_epochs,
        "train_seconds": info["train_seconds"],
        "load_after_each_phase": [os.getloadavg()[0]],
        "final": {"joint": _latent_scores(latent, labels, seed)},
        "imputation": _heldout_scores(mdata, masks, rna, atac),
    }


def imputation_baselines(mdata, train, masks, representation: np.ndarray) -> dict[str, dict]:
    """Held-out scores of the population mean, of that mean scaled by each cell's depth and of 15-NN smoothing."""
    from scmvp_scvi.metrics import knn_imputation, mean_imputation

    methods = {
        "mean": lambda modality: mean_imputation(train[modality].X, modality),
        "mean_by_depth": lambda modality: mean_imputation(train[modality].X, modality, by_depth=True),
        "knn_pca_lsi": lambda modality: knn_imputation(train[modality].X, representation, modality),
    }
    return {name: _heldout_scores(mdata, masks, impute("rna"), impute("atac")) for name, impute in methods.items()}


# ---------------------------------------------------------------------------------------------------- the table
def _get(result: dict, path: str) -> float | None:
    value = result
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value)


ROWS = [
    ("Pretrained joint latent: Leiden ARI / NMI", ("pretrained.joint.leiden_ari", "pretrained.joint.leiden_nmi")),
    ("Joint latent after joint training: Leiden ARI / NMI", ("final.joint.leiden_ari", "final.joint.leiden_nmi")),
    ("Joint latent after joint training: KMeans ARI / NMI", ("final.joint.kmeans_ari", "final.joint.kmeans_nmi")),
    ("Mixture clusters: ARI / NMI", ("final.mixture.ari", "final.mixture.nmi")),
    ("Mixture clusters at the switch: ARI / NMI", ("pretrained.mixture.ari", "pretrained.mixture.nmi")),
    ("Mixture clusters, finer labels: ARI / NMI", ("final.mixture.fine_ari", "final.mixture.fine_nmi")),
    ("Mixture components used / K", ("final.mixture.n_used", "final.mixture.n_components")),
    ("Smallest mixture cluster (cells)", ("final.mixture.smallest_used",)),
    ("RNA-only latent: Leiden ARI / NMI", ("final.rna.leiden_ari", "final.rna.leiden_nmi")),
    ("Pretrained RNA-only latent: Leiden ARI / NMI", ("pretrained.rna.leiden_ari", "pretrained.rna.leiden_nmi")),
    ("ATAC-only latent: Leiden ARI / NMI", ("final.atac.leiden_ari", "final.atac.leiden_nmi")),
    (
        "RNA-only and ATAC-only latents side by side: Leiden ARI / NMI",
        ("final.side_by_side.leiden_ari", "final.side_by_side.leiden_nmi"),
    ),
    (
        "Pretrained RNA-only and ATAC-only latents side by side: Leiden ARI / NMI",
        ("pretrained.side_by_side.leiden_ari", "pretrained.side_by_side.leiden_nmi"),
    ),
    ("ATAC-only latent: KMeans ARI / NMI", ("final.atac.kmeans_ari", "final.atac.kmeans_nmi")),
    ("Pretrained ATAC-only latent: Leiden ARI / NMI", ("pretrained.atac.leiden_ari", "pretrained.atac.leiden_nmi")),
    (
        "Active dimensions after pretraining: joint / RNA / ATAC encoder",
        ("pretrained.joint.active_dims", "pretrained.rna.active_dims", "pretrained.atac.active_dims"),
    ),
    (
        "Active dimensions after joint training: joint / RNA / ATAC encoder",
        ("final.joint.active_dims", "final.rna.active_dims", "final.atac.active_dims"),
    ),
    (
        "Held-out RNA Pearson per gene / per cell",
        ("imputation.heldout_rna_gene_pearson", "imputation.heldout_rna_cell_pearson"),
    ),
    (
        "Held-out ATAC AUROC per peak / per cell",
        ("imputation.heldout_atac_peak_auroc", "imputation.heldout_atac_cell_auroc"),
    ),
    (
        "After pretraining: held-out RNA Pearson per gene / ATAC AUROC per peak",
        ("pretrained_imputation.heldout_rna_gene_pearson", "pretrained_imputation.heldout_atac_peak_auroc"),
    ),
    ("Training minutes (pretraining + joint)", ("minutes",)),
]
IMPUTATION_ROWS = [
    ("Held-out RNA Pearson per gene / per cell", ("heldout_rna_gene_pearson", "heldout_rna_cell_pearson")),
    ("Held-out ATAC AUROC per peak / per cell", ("heldout_atac_peak_auroc", "heldout_atac_cell_auroc")),
    ("Held-out ATAC AUPRC per peak / per cell", ("heldout_atac_peak_auprc", "heldout_atac_cell_auprc")),
]
IMPUTATION_BASELINES = {
    "mean": "population mean",
    "mean_by_depth": "population mean scaled by depth",
    "knn_pca_lsi": "15-NN mean (PCA + LSI)",
}
MULTIVI_ROWS = [
    ("Leiden ARI / NMI", ("final.joint.leiden_ari", "final.joint.leiden_nmi")),
    ("KMeans ARI / NMI", ("final.joint.kmeans_ari", "final.joint.kmeans_nmi")),
    ("Active dimensions", ("final.joint.active_dims",)),
    (
        "Held-out RNA Pearson per gene / per cell",
        ("imputation.heldout_rna_gene_pearson", "imputation.heldout_rna_cell_pearson"),
    ),
    (
        "Held-out ATAC AUROC per peak / per cell",
        ("imputation.heldout_atac_peak_auroc", "imputation.heldout_atac_cell_auroc"),
    ),
    ("Epochs", ("epochs",)),
    ("Training minutes", ("minutes",)),
]
BASELINE_ROWS = [
    ("Leiden ARI / NMI", ("leiden_ari", "leiden_nmi")),
    ("KMeans ARI / NMI", ("kmeans_ari", "kmeans_nmi")),
]


def _train_seconds(result: dict) -> float | None:
    """Training time of a run: one figure for MULTIVI, pretraining + joint training for SCMVP."""
    if "train_seconds" in result:
        return result["train_seconds"]
    return result["pretrain_seconds"] + result["joint_seconds"] if "pretrain_seconds" in result else None


def _has(result: dict, path: str) -> bool:
    return (_train_seconds(result) if path == "minutes" else _get(result, path)) is not None


def _timed_alone(result: dict) -> bool:
    """Whether a run had the cores to itself: a 1-minute load below 3 after each phase (2 torch threads).

    A run known to have shared the cores at another time carries a ``shared_cores`` note in its JSON.
    """
    return "shared_cores" not in result and max(result.get("load_after_each_phase", [np.inf])) < 3.0


def _mean_sd(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    values = np.asarray(values, dtype=float)
    if len(values) == 1 or values.std() == 0:
        return f"{values[0]:.{digits}f}" if digits != 1 or values[0] % 1 else f"{values[0]:.0f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def _cell(results: list[dict], paths: tuple[str, ...]) -> str:
    parts = []
    for path in paths:
        if path == "minutes":
            values = [_train_seconds(r) / 60 for r in results if _has(r, path) and _timed_alone(r)]
        else:
            # a constant prediction has no correlation across cells (NaN): shown as "-"
            values = [v for v in (_get(r, path) for r in results) if v is not None and np.isfinite(v)]
        integer = path.endswith(("active_dims", "n_used", "n_components", "smallest_used", "epochs"))
        parts.append(_mean_sd(values, 1 if integer or path == "minutes" else 3))
    return " / ".join(parts)


def _commands(by_variant: dict[str, list[dict]], variants: list[str], args: argparse.Namespace) -> list[str]:
    """The commands that produce the table's columns, from what each result file records."""
    # results written before "pretrained_by" was recorded were pretrained by their own variant
    sources = {v: {r.get("pretrained_by", v) for r in by_variant[v]} - {v} for v in by_variant}
    saved = set().union(*sources.values())
    commands = []
    for variant in [*variants, *(p for p in ("baselines", "multivi") if p in by_variant)]:
        command = f"python benchmarks/ablation.py --variants {variant}"
        command += f" --name {args.name}" if args.name != args.data.stem else ""
        command += " --save-models DIR" if variant in saved else ""
        command += " --from-pretrained DIR" if sources[variant] else ""
        seeds = sorted(r["seed"] for r in by_variant[variant])
        command += "" if seeds == [0, 1, 2] else " --seeds " + " ".join(map(str, seeds))
        commands.append(command)
    return commands


def write_table(args: argparse.Namespace) -> str:
    """Mean ± standard deviation over seeds of every variant and baseline with results."""
    files = sorted(args.results.glob(f"{args.name}_*_seed*.json"))
    runs = [json.loads(f.read_text()) for f in files]
    # another name can extend this one ("snare_cortex_rerun" and "snare_cortex"): keep this name's runs only
    runs = [r for f, r in zip(files, runs, strict=True) if f.stem == f"{args.name}_{r['variant']}_seed{r['seed']}"]
    by_variant: dict[str, list[dict]] = {}
    for run in runs:
        by_variant.setdefault(run["variant"], []).append(run)
    variants = [v for v in VARIANTS if v in by_variant]
    lines = [
        "<!-- written by benchmarks/ablation.py; included by ablation.md -->",
        "",
        "Each column is one variant of the model, trained on the same data with the same seeds; cells are the "
        "mean ± standard deviation over the seeds (the number of seeds is in the header). Every run hides a "
        "random 10% of the RNA and ATAC entries (a different draw per seed) and scores the imputation on them. "
        "Leiden is the best-NMI clustering over resolutions 0.1-2.0 on a 15-neighbour graph, KMeans uses k = "
        "number of cell types; an active dimension is a latent coordinate whose posterior mean varies across "
        "cells with variance above 0.01. After pretraining every encoder has a standard normal prior, so this "
        "counts the dimensions it uses; in joint training the RNA-only and ATAC-only encoders only feed the "
        "fusion layer, which is linear, so their scale is free and their clustering scores say more. "
        "Training minutes count only runs that had the cores to themselves (1-minute load below 3 after each "
        "phase); the header's n counts all runs. Produced by:",
        "",
        "```bash",
        *_commands(by_variant, variants, args),
        "```",
        "",
    ]
    if variants:
        first = by_variant[variants[0]][0]
        lines += [
            "| variant | what it changes |",
            "|---|---|",
            *[f"| `{v}` | {VARIANTS[v][0]} |" for v in variants],
            "",
            f"{args.data.name}: {first['n_cells']:,} cells, {first['epochs_per_phase']} pretraining + "
            f"{first['epochs_per_phase']} joint epochs per run unless a variant says otherwise; CPU, one run at a "
            "time.",
            "",
            "| metric | " + " | ".join(f"`{v}` (n={len(by_variant[v])})" for v in variants) + " |",
            "|---|" + "---|" * len(variants),
            *[
                f"| {title} | " + " | ".join(_cell(by_variant[v], paths) for v in variants) + " |"
                for title, paths in ROWS
                if any(_has(r, paths[0]) for v in variants for r in by_variant[v])  # rows no run has
            ],
            "",
        ]
    if "baselines" in by_variant:
        baselines = [r["baselines"] for r in by_variant["baselines"]]
        lines += [
            f"Baselines on the same data and seeds (n={len(baselines)}): 20 principal components of scaled "
            "log-normalised RNA, LSI components 2-21 of TF-IDF ATAC, both side by side (each block of unit "
            "scale), and muon's weighted nearest-neighbour graph of the two (Leiden only: WNN gives a graph, not "
            "an embedding).",
            "",
            "| metric | " + " | ".join(BASELINE_TITLES[b] for b in BASELINES) + " |",
            "|---|" + "---|" * len(BASELINES),
            *[
                f"| {title} | " + " | ".join(_cell([r[b] for r in baselines], paths) for b in BASELINES) + " |"
                for title, paths in BASELINE_ROWS
            ],
            "",
        ]
    if "multivi" in by_variant:
        peers = by_variant["multivi"]
        lines += [
            f"MULTIVI on the same data and seeds (n={len(peers)}): scvi-tools' default model and training (early "
            f"stopping on a 10% validation split), capped at {peers[0]['max_epochs']} epochs as in "
            "`compare.py`; scored as the variants' joint latent after joint training.",
            "",
            "| metric | MULTIVI |",
            "|---|---|",
            *[f"| {title} | {_cell(peers, paths)} |" for title, paths in MULTIVI_ROWS],
            "",
        ]
    imputation = [r["imputation_baselines"] for r in by_variant.get("baselines", []) if "imputation_baselines" in r]
    if imputation:
        lines += [
            f"Imputation baselines on the same held-out entries (n={len(imputation)}): every cell gets the "
            "population-mean profile, that profile scaled by the cell's depth (total RNA counts, number of open "
            "peaks), or the mean profile of its 15 nearest other cells in the PCA + LSI space. A prediction "
            "that is the same for every cell has no per-gene correlation (-).",
            "",
            "| metric | " + " | ".join(IMPUTATION_BASELINES.values()) + " |",
            "|---|" + "---|" * len(IMPUTATION_BASELINES),
            *[
                f"| {title} | "
                + " | ".join(_cell([r[b] for r in imputation], paths) for b in IMPUTATION_BASELINES)
                + " |"
                for title, paths in IMPUTATION_ROWS
            ],
            "",
        ]
    table = "\n".join(lines)
    args.table.write_text(table)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument(
        "--fine-label-key", default="cell_type_fine", help="finer labels the mixture clusters are also scored on"
    )
    parser.add_argument("--variants", nargs="+", choices=[*VARIANTS, "baselines", "multivi"], default=DEFAULT_VARIANTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="epochs per phase (default: the model's recipe)")
    parser.add_argument("--held-out", type=float, default=0.1)
    parser.add_argument("--multivi-max-epochs", type=int, default=100, help="epoch cap of the multivi peer")
    parser.add_argument("--n-cells", type=int, default=None, help="a seeded subsample of cells")
    parser.add_argument("--name", default=None, help="result name (default: the data file's stem)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "ablation")
    parser.add_argument("--table", type=Path, default=ROOT / "docs" / "ablation_table.md")
    parser.add_argument("--table-only", action="store_true", help="only rebuild the table from the JSON files")
    parser.add_argument("--save-models", type=Path, default=None, help="also save each model after each phase here")
    parser.add_argument(
        "--from-pretrained",
        type=Path,
        default=None,
        help="a --save-models folder: a variant whose pretraining another variant already saved there (same "
        "options but for the joint-training ones) starts joint training from that model",
    )
    parser.add_argument(
        "--rescore-mixture",
        type=Path,
        default=None,
        metavar="DIR",
        help="a --save-models folder: score the mixture of the saved models of --variants and --seeds again "
        "(at the switch and after joint training, finer labels included) into their result files; no training",
    )
    parser.add_argument("--run", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.name = args.name or args.data.stem
    args.results.mkdir(parents=True, exist_ok=True)

    if args.run:
        variant, seed = args.run[0], int(args.run[1])
        runners = {"baselines": run_baselines, "multivi": run_multivi}
        result = runners[variant](seed, args) if variant in runners else run_variant(variant, seed, args)
        path = args.results / f"{args.name}_{variant}_seed{seed}.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {path}", flush=True)
        return

    if args.rescore_mixture is not None:
        for seed in args.seeds:
            for variant in args.variants:
                rescore_mixture(variant, seed, args)
    elif not args.table_only:
        for seed in args.seeds:
            for variant in args.variants:
                print(f"== {variant}, seed {seed}", flush=True)
                command = [sys.executable, __file__, *sys.argv[1:], "--run", variant, str(seed)]
                subprocess.run(command, check=True)
    print(write_table(args))


if __name__ == "__main__":
    main()
