import mudata as md
import numpy as np
import pytest
import scmvp_scvi
from scmvp_scvi._cli import main

QUICK = ["--max-epochs", "2", "--pretrain-epochs", "2", "--quiet", "--accelerator", "cpu"]


def test_demo_writes_all_outputs(tmp_path, capsys):
    output = tmp_path / "demo.h5mu"
    main(["demo", "--output", str(output), "--n-cells", "200", "--n-cell-types", "3", *QUICK])
    printed = capsys.readouterr().out
    assert "KMeans on the latent: ARI" in printed and "SCMVP clusters" in printed
    result = md.read_h5mu(output)
    assert result.obsm["X_scmvp"].shape == (200, 20)
    assert "scmvp_cluster" in result.obs and "scmvp_cluster_probs" in result.obsm
    assert result["rna"].layers["scmvp_imputed"].shape == result["rna"].shape
    assert result["atac"].layers["scmvp_imputed"].shape == result["atac"].shape


def test_train_on_file_with_custom_modalities(tmp_path, capsys):
    mdata = scmvp_scvi.data.synthetic_paired(n_cells=150, n_genes=40, n_peaks=120, n_cell_types=3, n_batches=2)
    mdata = md.MuData({"gex": mdata["rna"], "peaks": mdata["atac"]})
    mdata.obs["batch"] = mdata["gex"].obs["batch"].to_numpy()
    mdata.obs["cell_type"] = mdata["gex"].obs["cell_type"].to_numpy()
    source, output = tmp_path / "in.h5mu", tmp_path / "out" / "result.h5mu"
    mdata.write(source)
    main(
        [
            "train", str(source), "--output", str(output), "--rna-modality", "gex", "--atac-modality", "peaks",
            "--batch-key", "batch", "--label-key", "cell_type", "--n-centroids", "3", *QUICK,
        ]
    )  # fmt: skip
    result = md.read_h5mu(output)
    assert np.isfinite(result.obsm["X_scmvp"]).all()
    assert set(result.obs["scmvp_cluster"].astype(int)) <= {0, 1, 2}
    assert "K = 3" in capsys.readouterr().out


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        main(["train", str(tmp_path / "nope.h5mu"), "--output", str(tmp_path / "o.h5mu")])
    bad = tmp_path / "bad.h5mu"
    bad.write_text("not an hdf5 file")
    with pytest.raises(SystemExit, match="could not read"):
        main(["train", str(bad), "--output", str(tmp_path / "o.h5mu")])


def test_bad_modality_reports_clearly(tmp_path):
    source = tmp_path / "in.h5mu"
    scmvp_scvi.data.synthetic_paired(n_cells=50, n_genes=10, n_peaks=20).write(source)
    with pytest.raises(SystemExit, match="'gex' is not a modality"):
        main(["train", str(source), "--output", str(tmp_path / "o.h5mu"), "--rna-modality", "gex"])


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "train" in out
