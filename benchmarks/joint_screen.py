"""One-seed screen of the joint-training phase: which of its parts moves the latent, the clusters and imputation.

Every screen starts from the same saved pretrained model (``ablation.py --save-models DIR`` writes them as
``<variant>_seed<k>_pretrained``) and runs only the joint phase with one part changed, or, for ``more_pretraining``,
runs the same number of epochs as pretraining instead. It is a screen, not a result: one seed, and the scores of
two runs of the same setting differ by a few hundredths in Leiden ARI. Anything it suggests is confirmed with
``ablation.py`` over 3 seeds before it changes a default.

Usage::

    python benchmarks/joint_screen.py DIR/balanced_prior_balance_single_seed0_pretrained --screens gate_frozen nocycle

Writes ``benchmarks/results/screens/<screen>_seed<k>.json``, prints one line per screen and rebuilds the table
``docs/screen_table.md`` from every result file (``--table-only``: only that).
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
from ablation import DEFAULT_DATA, _data, _imputation, _latent_report  # noqa: E402

# name -> (what it changes, module weights to set, SCMVP.train arguments, extra switches)
JOINT = {"n_epochs_kl_warmup": 0, "n_epochs_cluster_warmup": 7, "gmm_variance": "posterior"}
SCREENS: dict[str, tuple[str, dict, dict, set]] = {
    "pretrained": (
        "no further training: the pretrained model itself (scored with the gate at 0.5)",
        {},
        {},
        {"no_training"},
    ),
    "baseline": ("the balanced recipe's joint phase with balance_target='prior'", {}, JOINT, set()),
    "gate_neutral": ("the decoder's cluster gate starts at exactly 0.5 and learns", {}, JOINT, {"gate_neutral"}),
    "gate_frozen": ("the cluster gate stays at 0.5: no cluster gating of the decoder", {}, JOINT, {"gate_frozen"}),
    "lr1e3": ("learning rate 1e-3 instead of 5e-3 in joint training", {}, {**JOINT, "lr": 1e-3}, set()),
    "nosharp_frozen": (
        "no sharpness term, mixture weights frozen at their initial values",
        {"sharpness": 0.0},
        JOINT,
        {"freeze_weights"},
    ),
    "nocluster": ("no cluster terms (cluster weight 0)", {"cluster": 0.0}, JOINT, set()),
    "nocycle": ("no cycle KL (cycle KL weight 0)", {"cycle_kl": 0.0}, JOINT, set()),
    "nocycle_nocluster": ("neither cycle KL nor cluster terms", {"cycle_kl": 0.0, "cluster": 0.0}, JOINT, set()),
    "joint_atac01": ("ATAC reconstruction weight 0.1 in joint training", {"atac": 0.1}, JOINT, set()),
    "joint_atac01_single": (
        "ATAC reconstruction weight 0.1 in joint training, single-modality terms kept",
        {"atac": 0.1, "single": 1.0},
        JOINT,
        set(),
    ),
    "joint_atac01_single_atac1": (
        "ATAC weight 0.1 for the joint posterior's reconstruction only; the ATAC-only term keeps weight 1",
        {"joint_atac": 0.1, "single": 1.0},
        JOINT,
        set(),
    ),
    "joint_atac03_single": (
        "ATAC reconstruction weight 0.3 in joint training, single-modality terms kept",
        {"atac": 0.3, "single": 1.0},
        JOINT,
        set(),
    ),
    "more_pretraining": (
        "no switch: the same number of epochs of pretraining instead (scored with the gate at 0.5)",
        {},
        {},
        {"pretrain"},
    ),
}


def _apply_switches(module, switches: set) -> None:
    """Start the cluster gate neutral or freeze it, or freeze the mixture weights."""
    import torch

    gate_norm = module.decoder.cluster_attention.layers[3]  # batch norm before the gate's sigmoid
    with torch.no_grad():
        if switches & {"gate_neutral", "gate_frozen"}:  # a zero scale gives sigmoid(0) = 0.5 for every cell
            gate_norm.weight.zero_()
        if "gate_frozen" in switches:
            gate_norm.bias.zero_()
    if "gate_frozen" in switches:
        module.decoder.cluster_attention.requires_grad_(False)
    if "freeze_weights" in switches:
        module.prior.logits.requires_grad_(False)


def run_screen(name: str, args: argparse.Namespace) -> dict:
    """Load the pretrained model, change one part, train, and score latents, clusters and imputation."""
    import scvi

    import scmvp_scvi
    from scmvp_scvi.metrics import agreement

    _, weights, train_kwargs, switches = SCREENS[name]
    scvi.settings.seed = args.seed
    data_args = argparse.Namespace(data=args.data, n_cells=None, held_out=0.1, label_key="cell_type")
    mdata, train, masks = _data(data_args, args.seed)
    labels = mdata.obs["cell_type"].astype(str).to_numpy()
    model = scmvp_scvi.SCMVP.load(args.model, adata=train)
    module = model.module
    module.balance_target = "prior"
    module.weights.update({"single": 0.0, **weights})
    _apply_switches(module, switches)

    start = time.perf_counter()
    common = {"accelerator": "cpu", "enable_progress_bar": False}
    if "pretrain" in switches:
        module.gmm_initialized.fill_(False)
        plan = {"lr": 5e-3, "weight_decay": 1e-6, "eps": 0.01, "n_epochs_kl_warmup": None}  # SCMVP.train's
        model._train_phase("pretraining", max_epochs=args.epochs, plan_kwargs=plan, **common)
    elif "no_training" not in switches:
        model.train(max_epochs=args.epochs, **common, **train_kwargs)
    seconds = time.perf_counter() - start

    # the folder name says which pretrained model; where it lies on this machine does not matter
    result = {"screen": name, "seed": args.seed, "model": args.model.name, "seconds": seconds}
    if switches & {"pretrain", "no_training"}:
        # score the pretrained state as pretraining trained it: decoder gate at 0.5, no mixture
        module.gmm_initialized.fill_(False)
    else:
        clusters = model.get_cluster_assignments(key_added=None)
        sizes = np.bincount(clusters, minlength=model.n_centroids)
        result["mixture"] = {**agreement(labels, clusters), "n_used": int((sizes > 0).sum())}
    result["final"] = _latent_report(model, labels, args.seed)
    result["imputation"] = _imputation(model, mdata, masks)
    return result


def summary(result: dict) -> str:
    """One line: Leiden ARI / NMI of each latent and of the mixture, held-out imputation."""
    final, imputation = result["final"], result["imputation"]
    parts = [f"{m} {final[m]['leiden_ari']:.3f}/{final[m]['leiden_nmi']:.3f}" for m in ("joint", "rna", "atac")]
    if "mixture" in result:
        parts.append(f"mixture {result['mixture']['ari']:.3f}/{result['mixture']['nmi']:.3f}")
    parts.append(
        f"held-out RNA gene {imputation['heldout_rna_gene_pearson']:.3f} "
        f"ATAC peak {imputation['heldout_atac_peak_auroc']:.3f}"
    )
    return f"{result['screen']}: " + ", ".join(parts)


TABLE_ROWS = [
    ("Joint latent: Leiden ARI / NMI", ("final.joint.leiden_ari", "final.joint.leiden_nmi")),
    ("RNA-only latent: Leiden ARI / NMI", ("final.rna.leiden_ari", "final.rna.leiden_nmi")),
    ("ATAC-only latent: Leiden ARI / NMI", ("final.atac.leiden_ari", "final.atac.leiden_nmi")),
    ("Mixture clusters: ARI / NMI", ("mixture.ari", "mixture.nmi")),
    (
        "Held-out RNA Pearson per gene / per cell",
        ("imputation.heldout_rna_gene_pearson", "imputation.heldout_rna_cell_pearson"),
    ),
    (
        "Held-out ATAC AUROC per peak / per cell",
        ("imputation.heldout_atac_peak_auroc", "imputation.heldout_atac_cell_auroc"),
    ),
]


def _value(result: dict, path: str) -> str:
    value = result
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return "-"
        value = value[key]
    return f"{value:.3f}"


def write_table(results: Path, table: Path) -> str:
    """One row per screen that has a result file, in the order of ``SCREENS``."""
    runs = {}
    for path in sorted(results.glob("*_seed*.json")):
        result = json.loads(path.read_text())
        runs[(result["screen"], result["seed"])] = result
    lines = [
        "<!-- written by benchmarks/joint_screen.py; included by ablation.md -->",
        "",
        "Each row starts from the saved pretrained model named in it (`ablation.py --save-models`), 15 epochs per "
        "screen; Leiden is the best-NMI clustering over resolutions 0.1-2.0. Produced by:",
        "",
        "```bash",
        "python benchmarks/ablation.py --variants balanced_prior_balance_single --seeds 0 --save-models models",
        "python benchmarks/joint_screen.py models/balanced_prior_balance_single_seed0_pretrained",
        "# other seeds: --seeds 0 1 2 on the first line, --seed k and the seed-k model on the second",
        "```",
        "",
        "| screen | what it changes | " + " | ".join(title for title, _ in TABLE_ROWS) + " |",
        "|---|---|" + "---|" * len(TABLE_ROWS),
    ]
    for (name, seed), result in sorted(runs.items(), key=lambda item: (list(SCREENS).index(item[0][0]), item[0][1])):
        cells = [" / ".join(_value(result, path) for path in paths) for _, paths in TABLE_ROWS]
        source = f"seed {seed}, `{result['model']}`" if "model" in result else f"seed {seed}"
        lines.append(f"| `{name}` ({source}) | {SCREENS[name][0]} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    table.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, nargs="?", help="a saved pretrained model")
    parser.add_argument("--screens", nargs="+", choices=list(SCREENS), default=list(SCREENS))
    parser.add_argument("--seed", type=int, default=0, help="the seed the model was pretrained with")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--results", type=Path, default=HERE / "results" / "screens")
    parser.add_argument("--table", type=Path, default=HERE.parent / "docs" / "screen_table.md")
    parser.add_argument("--table-only", action="store_true", help="only rebuild the table from the JSON files")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    for name in [] if args.table_only else args.screens:
        result = run_screen(name, args)
        (args.results / f"{name}_seed{args.seed}.json").write_text(json.dumps(result, indent=1) + "\n")
        print(summary(result), flush=True)
    write_table(args.results, args.table)


if __name__ == "__main__":
    main()
