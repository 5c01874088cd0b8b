import argparse
from pathlib import Path

import mudata as md
import numpy as np
import pytest

import scmvp_scvi
from scmvp_scvi._cli import _parser, main

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


def test_summary_and_saved_model(tmp_path, capsys):
    source, output, model_dir = tmp_path / "in.h5mu", tmp_path / "out.h5mu", tmp_path / "model"
    scmvp_scvi.data.synthetic_paired(n_cells=120, n_genes=30, n_peaks=60, n_cell_types=3).write(source)
    figure = tmp_path / "figures" / "umap.png"
    main(
        [
            "train", str(source), "--output", str(output), "--n-centroids", "3", "--save-model", str(model_dir),
            "--label-key", "cell_type", "--umap", str(figure), *QUICK,
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "120 cells, 30 genes, 60 peaks" in printed
    assert "2 pretraining + 2 joint epochs" in printed
    assert "K = 3 mixture components" in printed
    assert "recovery of 'cell_type' (3 groups)" in printed
    assert figure.read_bytes()[:4] == b"\x89PNG"
    result = md.read_h5mu(output)
    assert result.obsm["X_umap"].shape == (120, 2) and np.isfinite(result.obsm["X_umap"]).all()
    model = scmvp_scvi.SCMVP.load(str(model_dir), result)
    np.testing.assert_allclose(model.get_latent_representation(key_added=None), result.obsm["X_scmvp"], atol=1e-5)
    # the input file is untouched
    assert "X_scmvp" not in md.read_h5mu(source).obsm
    # an existing output is only replaced on request
    with pytest.raises(SystemExit, match="already exists; pass --overwrite"):
        main(["train", str(source), "--output", str(output), *QUICK])


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("result.h5ad", "should end in .h5mu"),
        ("in.h5mu", "is the input file"),
        ("folder.h5mu", "is a folder"),
        ("plain.txt/result.h5mu", "is not a writable folder"),
        ("result.h5mu --umap umap.jpeg", "should end in .png, .pdf or .svg"),
    ],
)
def test_bad_outputs_stop_before_reading(tmp_path, output, message):
    source = tmp_path / "in.h5mu"
    source.write_text("never read")  # a bad output is reported before the input is read
    (tmp_path / "folder.h5mu").mkdir()
    (tmp_path / "plain.txt").write_text("")
    output, *extra = output.split()
    with pytest.raises(SystemExit, match=message):
        main(["train", str(source), "--output", str(tmp_path / output), *extra])
    assert source.read_text() == "never read"


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        main(["train", str(tmp_path / "nope.h5mu"), "--output", str(tmp_path / "o.h5mu")])
    bad = tmp_path / "bad.h5mu"
    bad.write_text("not an hdf5 file")
    with pytest.raises(SystemExit, match="could not read"):
        main(["train", str(bad), "--output", str(tmp_path / "o.h5mu")])
    with pytest.raises(SystemExit, match=r"is a folder; give an \.h5mu file"):
        main(["train", str(tmp_path), "--output", str(tmp_path / "o.h5mu")])
    h5ad = tmp_path / "cells.h5ad"
    scmvp_scvi.data.synthetic_paired(n_cells=20, n_genes=5, n_peaks=5)["rna"].write_h5ad(h5ad)
    with pytest.raises(SystemExit, match=r"holds no modalities; is it an \.h5ad file"):
        main(["train", str(h5ad), "--output", str(tmp_path / "o.h5mu")])


def test_bad_modality_reports_clearly(tmp_path):
    source = tmp_path / "in.h5mu"
    scmvp_scvi.data.synthetic_paired(n_cells=50, n_genes=10, n_peaks=20).write(source)
    with pytest.raises(
        SystemExit, match=r"--rna-modality 'gex' is not a modality of the file \(it has \['rna', 'atac'\]\)"
    ):
        main(["train", str(source), "--output", str(tmp_path / "o.h5mu"), "--rna-modality", "gex"])
    with pytest.raises(SystemExit, match="--label-key 'celltype' is not a column of obs"):
        main(["train", str(source), "--output", str(tmp_path / "o.h5mu"), "--label-key", "celltype"])
    with pytest.raises(SystemExit, match="batch_key 'donor' not found"):
        main(["train", str(source), "--output", str(tmp_path / "o.h5mu"), "--batch-key", "donor"])
    assert not (tmp_path / "o.h5mu").exists()


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "train" in out and "scmvp train --help" in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for option in ("--output", "--batch-key", "--n-centroids", "--accelerator", "--save-model", "example:"):
        assert option in out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"scmvp {scmvp_scvi.__version__}"


def test_every_option_is_documented_on_the_cli_page():
    page = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    options = {
        option
        for command in commands.values()
        for action in command._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    assert {"--output", "--umap", "--n-cells"} <= options
    assert not [option for option in sorted(options) if f"`{option}`" not in page]
