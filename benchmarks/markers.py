"""Do the model's differential tests find the textbook markers of the cortex cell types?

Trains SCMVP with its default recipe on snare_cortex (or loads a saved model), tests each annotated cell type
against all other cells with :meth:`SCMVP.differential_expression` and :meth:`SCMVP.differential_accessibility`,
and reports where each textbook marker gene ranks among the genes that go up in its type, next to scanpy's
Wilcoxon test on the same groups (log-normalised counts). For accessibility, the rank is that of the best peak
linked to the marker gene (``snare_cortex_gene_peak_links.npz``) among the peaks that open in the type.

Usage::

    python benchmarks/markers.py                        # train, test, write (about 20 minutes on 2 cores)
    python benchmarks/markers.py --save-model models/markers   # keep the trained model
    python benchmarks/markers.py --model models/markers        # test a saved model
    python benchmarks/markers.py --table-only                  # rewrite the table from the saved JSON

Writes ``benchmarks/results/markers_<data>.json`` and the table ``docs/markers_table.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SCMVP_DATA_DIR", ROOT.parent / "shared" / "data"))

# broad classes of the annotated types ("Mis" has no class and stays in the rest)
CLASSES = {
    "Excitatory": ("L2/3", "L4/5", "L6", "Clau"),
    "Inhibitory": ("Pvalb", "Sst", "CGE", "Npy"),
    "Astrocyte": ("Astro",),
    "Oligodendrocyte": ("Oligo",),
    "OPC": ("OPC",),
    "Microglia": ("MGC",),
    "Endothelial": ("Endo",),
    "Pericyte": ("Peri",),
}
# textbook markers of adult mouse cortex (those in the data's gene set): of each class, then of each type
CLASS_MARKERS = {
    "Excitatory": ["Slc17a7", "Neurod6"],
    "Inhibitory": ["Gad1", "Gad2"],
    "Astrocyte": ["Slc1a3", "Gja1", "Slc4a4"],
    "Oligodendrocyte": ["Plp1", "Mbp", "Mobp", "Mog"],
    "OPC": ["Vcan", "Lhfpl3"],
    "Microglia": ["Cx3cr1", "Csf1r", "Hexb", "C1qa"],
    "Endothelial": ["Flt1", "Ptprb"],
    "Pericyte": ["Pdgfrb"],
}
TYPE_MARKERS = {
    "L2/3": ["Cux2"],
    "L4/5": ["Rorb"],
    "L6": ["Foxp2", "Tle4"],
    "Clau": ["Nr4a2", "Synpr"],
    "Pvalb": ["Pvalb"],
    "Sst": ["Sst"],
    "CGE": ["Vip", "Lamp5"],
    "Npy": ["Npy"],
}


def ranks_up(result: pd.DataFrame, group: str, score: str, effect: str) -> pd.Series:
    """Rank (1 = top) of each feature among those that go up in ``group``: by ``score``, ties by ``effect``."""
    rows = result[(result["group1"] == group) & (result[effect] > 0)]
    order = np.lexsort((-rows[effect].to_numpy(), -rows[score].to_numpy()))
    return pd.Series(np.arange(1, len(rows) + 1), index=rows.index[order])


def wilcoxon_ranks(mdata, groupby: str) -> dict[str, pd.Series]:
    """Rank of each gene among those that go up in each group, by scanpy's Wilcoxon test (log-normalised)."""
    import scanpy as sc

    data = mdata.mod["rna"].copy()
    data.obs[groupby] = mdata.obs[groupby].to_numpy()
    sc.pp.normalize_total(data, target_sum=1e4)
    sc.pp.log1p(data)
    sc.tl.rank_genes_groups(data, groupby, method="wilcoxon")
    ranks = {}
    for group in data.obs[groupby].cat.categories:
        table = sc.get.rank_genes_groups_df(data, group)
        up = table[table["logfoldchanges"] > 0]["names"].to_numpy()
        ranks[group] = pd.Series(np.arange(1, len(up) + 1), index=up)
    return ranks


def best_peak_rank(ranks: pd.Series, peaks: np.ndarray) -> float:
    """Best rank among ``peaks`` (NaN when none of them goes up)."""
    found = ranks.reindex(peaks).dropna()
    return float(found.min()) if len(found) else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA_DIR / "snare_cortex.h5mu")
    parser.add_argument("--links", type=Path, default=DATA_DIR / "snare_cortex_gene_peak_links.npz")
    parser.add_argument("--groupby", default="cell_type")
    parser.add_argument("--model", type=Path, help="saved model to test instead of training one")
    parser.add_argument("--save-model", type=Path, help="where to save the trained model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="epochs of each phase (default: the default recipe's)")
    parser.add_argument("--top", type=int, default=20, help="a marker counts as found within this rank")
    parser.add_argument("--n-samples", type=int, default=5000, help="n_samples_overall of the tests")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--table", type=Path, default=ROOT / "docs" / "markers_table.md")
    parser.add_argument("--table-only", action="store_true", help="rewrite the table from the saved results")
    args = parser.parse_args()
    if args.table_only:
        write_table(json.loads((args.results / f"markers_{args.data.stem}.json").read_text()), args.table)
        return

    import mudata as md
    import scipy.sparse as sp
    import scvi

    import scmvp_scvi

    scvi.settings.seed = args.seed
    mdata = md.read_h5mu(args.data)
    start = time.perf_counter()
    if args.model is not None:
        model = scmvp_scvi.SCMVP.load(str(args.model), adata=mdata)
    else:
        scmvp_scvi.SCMVP.setup_mudata(mdata)
        model = scmvp_scvi.SCMVP(mdata)
        epochs = {"max_epochs": args.epochs, "pretrain_epochs": args.epochs}
        model.train(accelerator="cpu", enable_progress_bar=False, **epochs)
        if args.save_model is not None:
            model.save(str(args.save_model), overwrite=True)
    train_s = time.perf_counter() - start

    types = mdata.obs[args.groupby].astype(str)
    of_type = {t: c for c, members in CLASSES.items() for t in members}
    mdata.obs["marker_class"] = pd.Categorical(types.map(of_type).fillna("other"))
    links = sp.load_npz(args.links).tocsr()
    genes, peaks = mdata.mod["rna"].var_names, mdata.mod["atac"].var_names
    seconds = {}
    rows = []
    for level, groupby, markers in (
        ("class", "marker_class", CLASS_MARKERS),
        ("type", args.groupby, TYPE_MARKERS),
    ):
        groups = list(markers)
        start = time.perf_counter()
        de = model.differential_expression(groupby=groupby, group1=groups, n_samples_overall=args.n_samples)
        seconds[f"de_{level}"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        da = model.differential_accessibility(groupby=groupby, group1=groups, n_samples_overall=args.n_samples)
        seconds[f"da_{level}"] = round(time.perf_counter() - start, 1)
        wilcoxon = wilcoxon_ranks(mdata, groupby)
        for group in groups:
            de_ranks = ranks_up(de, group, "proba_de", "lfc_mean")
            da_ranks = ranks_up(da, group, "proba_da", "effect_size")
            for gene in markers[group]:
                linked = peaks[links[genes.get_loc(gene)].indices]
                rows.append(
                    {
                        "level": level,
                        "group": group,
                        "n_cells": int((mdata.obs[groupby] == group).sum()),
                        "marker": gene,
                        "scmvp_de_rank": float(de_ranks.get(gene, np.nan)),
                        "wilcoxon_rank": float(wilcoxon[group].get(gene, np.nan)),
                        "n_linked_peaks": len(linked),
                        "scmvp_da_best_peak_rank": best_peak_rank(da_ranks, linked),
                    }
                )
    table = pd.DataFrame(rows)
    found = {
        column: int((table[column] <= args.top).sum())
        for column in ("scmvp_de_rank", "wilcoxon_rank", "scmvp_da_best_peak_rank")
    }
    result = {
        "data": args.data.name,
        "groupby": args.groupby,
        "seed": args.seed,
        "model": f"saved model {args.model.name}" if args.model else "default recipe",
        "epochs": args.epochs,
        "top": args.top,
        "n_samples_overall": args.n_samples,
        "n_markers": len(table),
        "n_peaks": len(peaks),
        "found_in_top": found,
        "seconds": {"train": round(train_s, 1), **seconds},
        "scmvp_scvi": scmvp_scvi.__version__,
        "rows": table.to_dict(orient="records"),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"markers_{args.data.stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_table(result, args.table)
    print(args.table.read_text())


def _rank(value: float, top: int) -> str:
    if np.isnan(value):
        return "not up"
    return f"**{int(value)}**" if value <= top else str(int(value))


def write_table(result: dict, path: Path) -> None:
    """Markdown table: one row per marker gene of an annotated type, ranks in bold when within the top."""
    top, n = result["top"], result["n_markers"]
    rows = pd.DataFrame(result["rows"])
    with_peaks = rows[rows["n_linked_peaks"] > 0]
    found = {column: int((rows[column] <= top).sum()) for column in ("scmvp_de_rank", "wilcoxon_rank")}
    da = with_peaks["scmvp_da_best_peak_rank"]
    n_peaks = result.get("n_peaks")
    top_percent = ""
    if n_peaks:
        cut = n_peaks // 100
        top_percent = f", in the top 1% of the peaks (rank {cut:,}) {int((da <= cut).sum())}/{len(da)}"
    lines = [
        f"Ranks among the features that go up in each type (1 = top; bold: within the top {top}), "
        f"{result['data']}, each broad class and each annotated type (`{result['groupby']}`) against all other "
        f"cells; {result['n_samples_overall']:,} posterior draws per group; one model: {result['model']} (seed "
        f"{result['seed']}). Markers in the top {top}: SCMVP differential expression "
        f"{found['scmvp_de_rank']}/{n}, scanpy's Wilcoxon test {found['wilcoxon_rank']}/{n}. SCMVP differential "
        f"accessibility, best peak linked to the marker: in the top {top} {int((da <= top).sum())}/{len(da)}"
        f"{top_percent}.",
        "",
        "| level | group | cells | marker | SCMVP DE rank | Wilcoxon rank | linked peaks | SCMVP DA rank (best peak) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        da_rank = _rank(row["scmvp_da_best_peak_rank"], top) if row["n_linked_peaks"] else "no linked peak"
        lines.append(
            f"| {row['level']} | {row['group']} | {row['n_cells']:,} | {row['marker']} | "
            f"{_rank(row['scmvp_de_rank'], top)} | {_rank(row['wilcoxon_rank'], top)} | {row['n_linked_peaks']} | "
            f"{da_rank} |"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
