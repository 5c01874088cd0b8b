"""Command line: ``scmvp demo`` and ``scmvp train INPUT.h5mu --output OUTPUT.h5mu``."""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import NoReturn

from ._gmm_init import LEIDEN_RESOLUTION
from ._likelihoods import ATAC_LIKELIHOODS, RNA_LIKELIHOODS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scmvp",
        description=(
            "Joint embedding, clustering and imputation of paired scRNA-seq + scATAC-seq with scMVP. "
            "Results (latent in obsm['X_scmvp'], clusters in obs['scmvp_cluster'], imputed values in the "
            "'scmvp_imputed' layer of each modality) are written to an .h5mu file."
        ),
        epilog="Options of a command: scmvp COMMAND --help (e.g. scmvp train --help).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="train on built-in synthetic data and report how well the known cell types are recovered",
        description="Train on seeded synthetic paired data with known cell types and report ARI/NMI.",
    )
    demo.add_argument(
        "--output",
        type=Path,
        default=Path("scmvp_demo.h5mu"),
        help="output .h5mu, replaced if it exists (default: %(default)s)",
    )
    demo.add_argument("--save-model", type=Path, default=None, help="also save the trained model in this folder")
    demo.add_argument("--n-cells", type=int, default=1500, help="number of synthetic cells (default: %(default)s)")
    demo.add_argument("--n-cell-types", type=int, default=6, help="number of cell types (default: %(default)s)")
    _training_options(demo)

    train = commands.add_parser(
        "train",
        help="train on a MuData file (.h5mu) with paired RNA and ATAC modalities",
        description=(
            "Train SCMVP on an .h5mu file whose RNA and ATAC modalities hold raw counts of the same cells, and "
            "write the latent, clusters and imputed values to a new .h5mu. The input file is not modified."
        ),
        epilog="example: scmvp train snare_cortex.h5mu --output snare_scmvp.h5mu --label-key cell_type",
    )
    train.add_argument("input", type=Path, help="input .h5mu")
    train.add_argument("--output", type=Path, required=True, help="output .h5mu with all results")
    train.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    train.add_argument("--save-model", type=Path, default=None, help="also save the trained model in this folder")
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
    group.add_argument(
        "--leiden-resolution",
        type=float,
        default=LEIDEN_RESOLUTION,
        help="Leiden resolution that sets K when --n-centroids is not given; higher gives more components "
        "(default: %(default)s)",
    )
    group.add_argument("--n-latent", type=int, default=20, help="latent dimension (default: %(default)s)")
    group.add_argument("--rna-likelihood", choices=RNA_LIKELIHOODS, default="nb", help="default: %(default)s")
    group.add_argument(
        "--atac-likelihood",
        choices=ATAC_LIKELIHOODS,
        default=None,
        help="default: poisson on paired data, zip on a mosaic",
    )
    group.add_argument("--accelerator", default="auto", help="cpu, gpu or auto (default: %(default)s)")
    group.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    group.add_argument(
        "--umap",
        type=Path,
        default=None,
        metavar="FIGURE",
        help="also compute a UMAP of the latent (obsm['X_umap']) and draw it to FIGURE (.png, .pdf or .svg), "
        "coloured by SCMVP cluster and by --label-key",
    )
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scmvp_scvi")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _fail(message: str) -> NoReturn:
    raise SystemExit(f"scmvp: error: {message}")


def _check_output(args: argparse.Namespace) -> None:
    """Reject an output that would overwrite data or cannot be written, before any work is done."""
    output: Path = args.output
    if output.suffix != ".h5mu":
        _fail(f"--output {str(output)!r} should end in .h5mu (the results are written as a MuData file).")
    if getattr(args, "input", None) is not None and output.resolve() == args.input.resolve():
        _fail("--output is the input file; choose another path, the input is never modified.")
    if output.is_dir():
        _fail(f"--output {str(output)!r} is a folder; give a file name ending in .h5mu.")
    if output.exists() and not args.overwrite:
        _fail(f"--output {str(output)!r} already exists; pass --overwrite to replace it.")
    existing = next((parent for parent in output.resolve().parents if parent.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
        _fail(f"cannot write {str(output)!r}: {str(existing)!r} is not a writable folder.")
    if args.umap is not None and args.umap.suffix.lower() not in {".png", ".pdf", ".svg"}:
        _fail(f"--umap {str(args.umap)!r} should end in .png, .pdf or .svg.")


def _load(path: Path):
    import mudata as md

    if not path.exists():
        _fail(f"input file {str(path)!r} does not exist.")
    if path.is_dir():
        _fail(f"input {str(path)!r} is a folder; give an .h5mu file.")
    try:
        mdata = md.read_h5mu(path)
    except Exception as error:  # h5py/anndata raise many types for a file that is not a MuData
        _fail(f"could not read {str(path)!r} as a MuData .h5mu file ({type(error).__name__}: {error}).")
    if not mdata.mod:
        _fail(f"{str(path)!r} holds no modalities; is it an .h5ad file? Build a MuData with an RNA and an ATAC one.")
    return mdata


def _check_columns(mdata, args: argparse.Namespace, label_key: str | None) -> None:
    """Check modalities and labels, with messages that name the command-line options."""
    for option, name in (("--rna-modality", args.rna_modality), ("--atac-modality", args.atac_modality)):
        if name not in mdata.mod:
            _fail(
                f"{option} {name!r} is not a modality of the file (it has {list(mdata.mod)}); "
                f"pass e.g. {option} {next(iter(mdata.mod))}."
            )
    if label_key is not None and label_key not in mdata.obs:
        _fail(f"--label-key {label_key!r} is not a column of obs (its columns: {list(mdata.obs.columns)}).")


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
        _fail(str(error))
    print(model)
    start = time.perf_counter()
    try:
        model.train(
            max_epochs=args.max_epochs,
            pretrain_epochs=args.pretrain_epochs,
            leiden_resolution=args.leiden_resolution,
            accelerator=args.accelerator,
            enable_progress_bar=not args.quiet,
        )
    except (ValueError, FloatingPointError) as error:
        _fail(str(error))
    seconds = time.perf_counter() - start
    latent = model.get_latent_representation()
    clusters = model.get_cluster_assignments()
    if args.umap is not None:
        _draw_umap(mdata, args.umap, ["scmvp_cluster"] if label_key is None else [label_key, "scmvp_cluster"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    mdata.write(args.output)
    # written into the file minibatch by minibatch: the imputed layers never need to fit in memory
    model.write_imputed_values(args.output, overwrite=True)
    if args.save_model is not None:
        model.save(str(args.save_model), overwrite=args.overwrite)

    phases = model.history["training_phase"]["training_phase"].value_counts()
    sizes = Counter(clusters.tolist())
    rna, atac = (mdata.mod[modalities[key]] for key in ("rna_layer", "atac_layer"))
    print("\nSummary")
    print(f"  data          {mdata.n_obs:,} cells, {rna.n_vars:,} genes, {atac.n_vars:,} peaks")
    print(
        f"  training      {phases.get('pretraining', 0)} pretraining + {phases.get('joint', 0)} joint epochs "
        f"in {seconds / 60:.1f} min"
    )
    print(
        f"  clusters      K = {model.n_centroids} mixture components; {len(sizes)} used, "
        f"largest {max(sizes.values()):,} cells, smallest {min(sizes.values()):,}"
    )
    print(f"  final loss    {float(model.history['train_loss'].iloc[-1, 0]):.1f}")
    print(f"  wrote         {args.output}: obsm['X_scmvp'], obs['scmvp_cluster'], obsm['scmvp_cluster_probs'],")
    print("                layers['scmvp_imputed'] of each modality")
    if args.umap is not None:
        print(f"  UMAP          obsm['X_umap'], drawn to {args.umap}")
    if args.save_model is not None:
        print(f"  model         {args.save_model} (scmvp_scvi.SCMVP.load(folder, mdata))")
    if label_key is not None:
        labels = mdata.obs[label_key].astype(str).to_numpy()
        scores = kmeans_scores(latent, labels, seed=args.seed)
        cluster_scores = agreement(labels, clusters)
        print(f"  recovery of {label_key!r} ({len(set(labels))} groups):")
        print(f"    KMeans on the latent: ARI {scores['kmeans_ari']:.3f}, NMI {scores['kmeans_nmi']:.3f}")
        print(f"    SCMVP clusters:       ARI {cluster_scores['ari']:.3f}, NMI {cluster_scores['nmi']:.3f}")


def _draw_umap(mdata, path: Path, colors: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # draw to a file, also without a display
    import matplotlib.pyplot as plt
    import scanpy as sc

    sc.pp.neighbors(mdata, use_rep="X_scmvp", transformer="sklearn")
    sc.tl.umap(mdata)
    fig, axes = plt.subplots(1, len(colors), figsize=(6.5 * len(colors), 5), squeeze=False, layout="constrained")
    for ax, color in zip(axes[0], colors, strict=True):
        sc.pl.umap(mdata, color=color, ax=ax, show=False, legend_fontsize=7, title=color)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``scmvp`` command."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        args.overwrite = True  # the demo's output only ever holds an earlier demo result
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _check_output(args)
    if args.command == "demo":
        from .data import synthetic_paired

        mdata = synthetic_paired(n_cells=args.n_cells, n_cell_types=args.n_cell_types, seed=args.seed)
        print(f"Synthetic paired data: {mdata.n_obs} cells, {args.n_cell_types} cell types.")
        _run(mdata, args, {"rna_layer": "rna", "atac_layer": "atac"}, "cell_type", None)
    else:
        mdata = _load(args.input)
        _check_columns(mdata, args, args.label_key)
        modalities = {"rna_layer": args.rna_modality, "atac_layer": args.atac_modality}
        _run(mdata, args, modalities, args.label_key, args.batch_key)
