"""Train SCMVP with Lightning DDP in 2 CPU processes (gloo); run by tests/test_distributed.py.

Usage: ``python tests/scripts/train_ddp.py OUT_DIR``. Lightning starts the second process by running this script
again; each process saves its latent, its parameters and a summary of its training history under ``OUT_DIR``.
"""

import json
import sys
from pathlib import Path

import numpy as np
import scvi
import torch

import scmvp_scvi

out = Path(sys.argv[1])
torch.set_num_threads(1)  # two processes share the cores
scvi.settings.seed = 0
mdata = scmvp_scvi.data.synthetic_paired(seed=0)
scmvp_scvi.SCMVP.setup_mudata(mdata)
model = scmvp_scvi.SCMVP(mdata)
model.train(accelerator="cpu", devices=2, strategy="ddp_find_unused_parameters_true", enable_progress_bar=False)
rank = torch.distributed.get_rank()
np.save(out / f"latent_{rank}.npy", model.get_latent_representation(key_added=None))
parameters = torch.cat([p.detach().flatten() for p in model.module.parameters()])
np.save(out / f"parameters_{rank}.npy", parameters.numpy())
history = model.history or {}
phases = history["training_phase"]["training_phase"].value_counts().to_dict() if "training_phase" in history else {}
summary = {"phases": phases, "world_size": torch.distributed.get_world_size(), "n_centroids": model.n_centroids}
(out / f"history_{rank}.json").write_text(json.dumps(summary))
