"""Command line: ``scmvp demo`` and ``scmvp train INPUT.h5mu --output OUTPUT.h5mu``."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ._likelihoods import ATAC_LIKELIHOODS, RNA_LIKELIHOODS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scmvp",
        description=(
            "Joint embedding, clustering and imputation of paired scRNA-seq + scATAC-seq with scMVP. "
            "Results (latent in obsm['X_scmvp'], clusters in obs['scmvp_cluster'], imputed values in the "
            "'scmvp_imputed' layer of each modality) are written to an .h5mu file."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="train on built-in synthetic data and report how well the known cell types are recovered",
        description="Train on seeded synthetic paired data with known cell types and report ARI/NMI.",
    )
    demo.add_argument(
        "--output", type=Path, default=Path("scmvp_demo.h5mu"), help="output .h5mu (default: %(default)s)"
    )
    demo.add_argument("--n-cells", type=int, default=1500, help="number of synthetic cells (default: %(default)s)")
    demo.add_argument("--n-cell-types", type=int, default=6, help="number of cell types (default: %(default)s)")
    _training_options(demo)

    train = commands.add_parser(
        "train",
        help="train on a MuData file (.h5mu) with paired RNA and ATAC modalities",
        description="Train SCMVP on an .h5mu file whose RNA and ATAC modalities hold raw counts of the same cells.",
    )
    train.add_argument("input", type=Path, help="input .h5mu")
    train.add_argument("--output", type=Path, required=True, help="output .h5mu with all results")
    train.add_argument("--rna-modality", default="rna", help="name of the RNA modality (default: %(default)s)")
    train.add_argument("--atac-modality", default="atac", help="name of the ATAC modality (default: %(default)s)")
    train.add_argument("--rna-layer", default=None, help="RNA layer with raw counts (default: .X)")
    train.add_argument("--atac-layer", default=None, help="ATAC layer with peak counts (default: .X)")
    train.add_argument("--batch-key", default=None, help="mdata.obs column with the batch of each cell")
    train.add_argument("--label-key", default=None, help="mdata.obs column with known cell types, to score the result")
    _training_options(train)
    return parser


def _training_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and training")
    group.add_argument("--max-epochs", type=int, default=None, help="joint-training epochs (default: by data size)")
    group.add_argument("--pretrain-epochs", type=int, default=None, help="pretraining epochs (default: by data size)")
    group.add_argument("--n-centroids", type=int, default=None, help="mixture components K (default: Leiden clusters)")
    group.add_argument("--n-latent", type=int, default=20, help="latent dimension (default: %(default)s)")
    group.add_argument("--rna-likelihood", choices=RNA_LIKELIHOODS, default="nb", help="default: %(default)s")
    group.add_argument("--atac-likelihood", choices=ATAC_LIKELIHOODS, default="zip", help="default: %(default)s")
    group.add_argument("--accelerator", default="auto", help="cpu, gpu or auto (default: %(default)s)")
    group.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def _load(path: Path):
    import mudata as md

    if not path.exists():
        raise SystemExit(f"scmvp: error: input file {str(path)!r} does not exist.")
    try:
        return md.read_h5mu(path)
    except Exception as error:  # h5py/anndata raise many types for a file that is not a MuData
        raise SystemExit(f"scmvp: error: could not read {str(path)!r} as a MuData .h5mu file ({error}).") from error


def _run(mdata, args, modalities: dict[str, str], label_key: str | None, batch_key: str | None) -> None:
    import scvi

    from . import SCMVP
    from .metrics import agreement, kmeans_scores

    scvi.settings.seed = args.seed
    try:
        SCMVP.setup_mudata(
            mdata,
            rna_layer=getattr(args, "rna_layer", None),
            atac_layer=getattr(args, "atac_layer", None),
            batch_key=batch_key,
            modalities=modalities,
        )
        model = SCMVP(
            mdata,
            n_latent=args.n_latent,
            n_centroids=args.n_centroids,
            rna_likelihood=args.rna_likelihood,
            atac_likelihood=args.atac_likelihood,
        )
    except (ValueError, TypeError) as error:
        raise SystemExit(f"scmvp: error: {error}") from error
    if label_key is not None and label_key not in mdata.obs:
        raise SystemExit(f"scmvp: error: --label-key {label_key!r} is not a column of mdata.obs.")
    print(model)
    start = time.perf_counter()
    model.train(
        max_epochs=args.max_epochs,
        pretrain_epochs=args.pretrain_epochs,
        accelerator=args.accelerator,
        enable_progress_bar=not args.quiet,
    )
    seconds = time.perf_counter() - start
    latent = model.get_latent_representation()
    clusters = model.get_cluster_assignments()
    model.get_imputed_values()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    mdata.write(args.output)

    print(f"\nTrained in {seconds:.0f} s; K = {model.n_centroids} mixture components.")
    print(f"Wrote {args.output}: obsm['X_scmvp'], obs['scmvp_cluster'], layers['scmvp_imputed'] of each modality.")
    if label_key is not None:
        labels = mdata.obs[label_key].astype(str).to_numpy()
        scores = kmeans_scores(latent, labels, seed=args.seed)
        print(f"Recovery of {label_key!r} ({len(set(labels))} groups):")
        print(f"  KMeans on the latent: ARI {scores['kmeans_ari']:.3f}, NMI {scores['kmeans_nmi']:.3f}")
        cluster_scores = agreement(labels, clusters)
        print(f"  SCMVP clusters:       ARI {cluster_scores['ari']:.3f}, NMI {cluster_scores['nmi']:.3f}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``scmvp`` command."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "demo":
        from .data import synthetic_paired

        mdata = synthetic_paired(n_cells=args.n_cells, n_cell_types=args.n_cell_types, seed=args.seed)
        print(f"Synthetic paired data: {mdata.n_obs} cells, {args.n_cell_types} cell types.")
        _run(mdata, args, {"rna_layer": "rna", "atac_layer": "atac"}, "cell_type", None)
    else:
        mdata = _load(args.input)
        modalities = {"rna_layer": args.rna_modality, "atac_layer": args.atac_modality}
        _run(mdata, args, modalities, args.label_key, args.batch_key)
