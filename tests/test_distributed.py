"""Training with Lightning DDP: two CPU processes (gloo) give one model, as good as a single process's."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scmvp_scvi._distributed import computed_once, distributed_rank
from scmvp_scvi.metrics import kmeans_scores

SCRIPT = Path(__file__).parent / "scripts" / "train_ddp.py"


def test_outside_a_process_group_the_work_runs_here():
    assert distributed_rank() is None
    assert computed_once(lambda: 41 + 1) == 42
    with pytest.raises(ZeroDivisionError):
        computed_once(lambda: 1 / 0)


def test_ddp_on_two_cpu_processes_trains_one_model_as_good_as_a_single_process(tmp_path, demo_data_and_model):
    environment = {**os.environ, "PYTHONWARNINGS": "ignore"}
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)], env=environment, capture_output=True, text=True, timeout=1200
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    latents = [np.load(tmp_path / f"latent_{rank}.npy") for rank in (0, 1)]
    parameters = [np.load(tmp_path / f"parameters_{rank}.npy") for rank in (0, 1)]
    summaries = [json.loads((tmp_path / f"history_{rank}.json").read_text()) for rank in (0, 1)]
    # one model: every process ends with the same weights, the mixture's included (initialised once); only the
    # batch-norm running statistics are each process's own, so the latents differ a little
    np.testing.assert_array_equal(parameters[0], parameters[1])
    assert np.abs(latents[0] - latents[1]).max() < 0.1
    assert summaries[0]["world_size"] == 2 and summaries[0]["n_centroids"] == summaries[1]["n_centroids"]
    assert set(summaries[0]["phases"]) == {"pretraining", "joint"}
    # as good as the single-process model of the same recipe on the same data
    mdata, single = demo_data_and_model
    labels = mdata.obs["cell_type"].to_numpy()
    ddp_ari = kmeans_scores(latents[0], labels)["kmeans_ari"]
    single_ari = kmeans_scores(single.get_latent_representation(key_added=None), labels)["kmeans_ari"]
    assert ddp_ari >= 0.9 and ddp_ari >= single_ari - 0.05
