"""How SCMVP handles a synthetic mosaic: prediction of the hidden modality and mixing of paired and single cells.

Usage::

    python benchmarks/mosaic_synthetic.py            # 3 seeds, about 40 s each on 2 CPU cores

Each seed simulates 1,500 paired cells (``scmvp_scvi.data.synthetic_paired``), zeroes the ATAC of a random 30%
and the RNA of another 30%, trains SCMVP on the mosaic (15 + 15 epochs) and scores:

- cell types in the latent: KMeans ARI, and the fraction of each cell's 15 nearest neighbours of its type;
- mixing: for each kind of cell (paired, RNA-only, ATAC-only), the fraction of its 15 nearest neighbours of
  another kind (random placement would give about 0.6 for paired cells and 0.7 for the others);
- prediction of the hidden profiles: RNA per-gene Pearson of log-normalised values for the ATAC-only cells, and
  ATAC per-peak AUROC for the RNA-only cells.

Writes ``benchmarks/results/mosaic_synthetic.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "mosaic_synthetic.json"
KINDS = ("paired", "rna_only", "atac_only")


def one_run(seed: int) -> dict:
    import scvi
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, roc_auc_score
    from sklearn.neighbors import NearestNeighbors

    import scmvp_scvi

    scvi.settings.seed = seed
    mdata = scmvp_scvi.data.synthetic_paired(n_cells=1500, seed=seed)
    truth = {m: mdata.mod[m].X.toarray() for m in ("rna", "atac")}
    order = np.random.default_rng(seed).permutation(mdata.n_obs)
    n = int(0.3 * mdata.n_obs)
    hidden = {"atac": order[:n], "rna": order[n : 2 * n]}
    for modality, rows in hidden.items():
        x = mdata.mod[modality].X.tolil()
        x[rows] = 0
        mdata.mod[modality].X = x.tocsr()
    scmvp_scvi.SCMVP.setup_mudata(mdata, missing_modality="zero_rows")
    model = scmvp_scvi.SCMVP(mdata)
    model.train(max_epochs=15, pretrain_epochs=15, enable_progress_bar=False)

    latent = model.get_latent_representation()
    types = mdata.obs["cell_type"].astype(str).to_numpy()
    kinds = mdata.obs["_scmvp_observed_modalities"].astype(str).to_numpy()
    neighbours = NearestNeighbors(n_neighbors=16).fit(latent).kneighbors(latent, return_distance=False)[:, 1:]
    result = {
        "seed": seed,
        "kmeans_ari": adjusted_rand_score(types, KMeans(6, n_init=10, random_state=0).fit_predict(latent)),
        "neighbours_same_type": float((types[neighbours] == types[:, None]).mean()),
    }
    for kind in KINDS:
        own = kinds == kind
        result[f"neighbours_other_kind_{kind}"] = float((kinds[neighbours[own]] != kind).mean())

    rna, atac = model.get_imputed_values(layer_key=None)
    rows = hidden["rna"]
    log_truth = np.log1p(truth["rna"][rows] / truth["rna"][rows].sum(1, keepdims=True) * 1e4)
    log_pred = np.log1p(rna[rows] / rna[rows].sum(1, keepdims=True) * 1e4)
    t, p = log_truth - log_truth.mean(0), log_pred - log_pred.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_gene = (t * p).sum(0) / np.sqrt((t**2).sum(0) * (p**2).sum(0))
    result["rna_pearson_per_gene"] = float(np.nanmean(per_gene))
    rows = hidden["atac"]
    is_open = truth["atac"][rows] > 0
    aurocs = [
        roc_auc_score(is_open[:, j], atac[rows, j])
        for j in range(is_open.shape[1])
        if 0 < is_open[:, j].sum() < len(rows)
    ]
    result["atac_auroc_per_peak"] = float(np.mean(aurocs))
    return result


def main() -> None:
    runs = [one_run(seed) for seed in (0, 1, 2)]
    summary = {
        key: [float(np.mean([r[key] for r in runs])), float(np.std([r[key] for r in runs]))]
        for key in runs[0]
        if key != "seed"
    }
    OUT.write_text(json.dumps({"runs": runs, "mean_std": summary}, indent=1))
    for key, (mean, std) in summary.items():
        print(f"{key}: {mean:.3f} ± {std:.3f}")


if __name__ == "__main__":
    main()
