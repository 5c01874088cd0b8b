"""Cost of one SCMVP training step, split into forward pass, backward pass and optimiser update, per phase.

Usage::

    python benchmarks/training_step.py                  # snare_cortex.h5mu, minibatches of 64 cells
    python benchmarks/training_step.py --batch-size 128 --atac-likelihoods zip   # JSON only, table printed

SCMVP's two phases are timed with each ATAC likelihood asked for (``--atac-likelihoods``; by default the
zero-inflated Poisson and the Poisson, whose decoder has no zero-inflation head), a MULTIVI step on the same
minibatch size beside them, and the first layer of an ATAC encoder alone, fed a dense minibatch or its non-zero
entries at several densities, shows up to which density the product over the non-zero entries (which the ATAC
encoders use on the CPU below ``scmvp_scvi._sparse_input.SPARSE_INPUT_MAX_DENSITY``) pays. The minibatches are
loaded before timing, so data loading is not counted; the optimiser is the one scvi-tools' ``TrainingPlan``
builds for training. The models take turns, one step each, after a few untimed warm-up steps, so that the ratios
of their times hold on a machine whose speed drifts. Further steps of each model then time the matrix products of
its layers as wide as the peaks, to show how much of a step they take. Writes
``benchmarks/results/training_step_<data>.json`` and the table ``docs/training_step.md``; a run on another
minibatch size writes ``training_step_<data>_batch<k>.json`` and prints its table, leaving the docs page to the
default run (unless ``--table`` names a file).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("SCMVP_DATA_DIR", ROOT.parent / "shared" / "data")) / "snare_cortex.h5mu"
WARMUP_STEPS = 3


def time_steps(participants: dict, n_steps: int) -> dict:
    """Median milliseconds of the forward pass, backward pass and optimiser update of each participant.

    ``participants`` maps a label to ``(module, optimizer, minibatches)``. They take turns, one step each, so that
    a slower or faster spell of the machine falls on all of them alike and their ratios hold.
    """
    samples = {label: {"forward_ms": [], "backward_ms": [], "optimizer_ms": []} for label in participants}
    for module, _, _ in participants.values():
        module.train()
    for step in range(n_steps):
        for label, (module, optimizer, batches) in participants.items():
            batch = batches[step]
            start = time.perf_counter()
            _, _, losses = module(batch)
            forward = time.perf_counter()
            optimizer.zero_grad()
            losses.loss.backward()
            backward = time.perf_counter()
            optimizer.step()
            end = time.perf_counter()
            if step >= WARMUP_STEPS:
                parts = samples[label]
                for key, seconds in zip(parts, (forward - start, backward - forward, end - backward), strict=True):
                    parts[key].append(seconds * 1e3)
    results = {}
    for label, parts in samples.items():
        result = {key: round(float(np.median(values)), 1) for key, values in parts.items()}
        result["step_ms"] = round(sum(result.values()), 1)
        results[label] = result
    return results


def time_peak_layers(participants: dict, n_peaks: int, n_steps: int = 10) -> dict:
    """Milliseconds per step spent in the matrix products of the layers as wide as the peaks, per participant.

    For ``n_steps`` extra steps of each participant (after the timed ones, so that those are not disturbed), every
    linear layer with ``n_peaks`` inputs (covariates included) or outputs runs through a function that computes
    the same products and times them: the forward product, and in the backward pass the weight gradient and,
    where autograd needs it, the input gradient. SCMVP's ATAC encoders on sparse data compute their first layer
    from the non-zero entries (``scmvp_scvi._sparse_input.sparse_linear``), timed the same way; finding those
    entries is not counted. The rest of the step is everything else.
    """
    import torch

    spent: dict[str, float] = {}

    class TimedLinear(torch.autograd.Function):
        """The products of a dense linear layer; ``weight`` is ``(out, in)``, or ``(in, out)`` when ``by_feature``
        (a ``FeatureMajorLinear``: the ATAC encoders' first layers on a dense input)."""

        @staticmethod
        def forward(ctx, x, weight, bias, by_feature: bool):
            ctx.save_for_backward(x, weight)
            ctx.has_bias, ctx.by_feature = bias is not None, by_feature
            start = time.perf_counter()
            if by_feature:
                y = x @ weight + bias
            else:
                y = x @ weight.t() if bias is None else torch.addmm(bias, x, weight.t())
            spent["forward_ms"] += time.perf_counter() - start
            spent["calls"] += 1
            return y

        @staticmethod
        def backward(ctx, grad):
            x, weight = ctx.saved_tensors
            start = time.perf_counter()
            grad_weight = x.t() @ grad if ctx.by_feature else grad.t() @ x
            grad_x = (grad @ (weight.t() if ctx.by_feature else weight)) if ctx.needs_input_grad[0] else None
            spent["backward_ms"] += time.perf_counter() - start
            return grad_x, grad_weight, grad.sum(0) if ctx.has_bias else None, None

    from scmvp_scvi import _sparse_input

    sparse_linear = _sparse_input.sparse_linear

    class TimedProduct(torch.autograd.Function):
        """``product(weight, bias)`` with its forward and backward passes timed (its own graph kept inside)."""

        @staticmethod
        def forward(ctx, weight, bias, product):
            with torch.enable_grad():
                leaves = (weight.detach().requires_grad_(), bias.detach().requires_grad_())
                start = time.perf_counter()
                out = product(*leaves)
                spent["forward_ms"] += time.perf_counter() - start
            spent["calls"] += 1
            ctx.leaves, ctx.out = leaves, out
            return out.detach()

        @staticmethod
        def backward(ctx, grad):
            start = time.perf_counter()
            torch.autograd.backward(ctx.out, grad)
            spent["backward_ms"] += time.perf_counter() - start
            return ctx.leaves[0].grad, ctx.leaves[1].grad, None

    def timed_sparse_linear(x, weight, bias):
        return TimedProduct.apply(weight, bias, lambda w, b: sparse_linear(x, w, b))

    def is_peak_wide(layer) -> bool:
        linear = isinstance(layer, torch.nn.Linear | _sparse_input.FeatureMajorLinear)
        return linear and (layer.in_features >= n_peaks or layer.out_features == n_peaks)

    def timed(layer):
        if isinstance(layer, _sparse_input.FeatureMajorLinear):
            return lambda x: TimedLinear.apply(x, layer.weight_by_feature, layer.bias, True)
        return lambda x: TimedLinear.apply(x, layer.weight, layer.bias, False)

    results = {}
    for label, (module, optimizer, batches) in participants.items():
        layers = [layer for layer in module.modules() if is_peak_wide(layer)]
        for layer in layers:
            layer.forward = timed(layer)
        _sparse_input.sparse_linear = timed_sparse_linear  # the ATAC encoders' first layers on sparse data
        module.train()
        samples = []
        try:
            for batch in batches[:n_steps]:
                spent.update(forward_ms=0.0, backward_ms=0.0, calls=0)
                start = time.perf_counter()
                _, _, losses = module(batch)
                optimizer.zero_grad()
                losses.loss.backward()
                optimizer.step()
                samples.append({**spent, "step_ms": time.perf_counter() - start})
        finally:
            _sparse_input.sparse_linear = sparse_linear
            for layer in layers:
                del layer.forward  # back to the class's own
        median = {key: float(np.median([s[key] for s in samples])) for key in ("forward_ms", "backward_ms", "step_ms")}
        results[label] = {
            "layers": len(layers),
            "calls": samples[-1]["calls"],
            **{key: round(value * 1e3, 1) for key, value in median.items()},
        }
    return results


def time_first_layer(n_cells: int, n_features: int, n_hidden: int, densities: list[float]) -> list[dict]:
    """Milliseconds of a forward and backward pass of an ATAC encoder's first layer, dense against sparse input.

    The layer is the one the encoders use (its weight stored feature-major, ``FeatureMajorLinear``). The dense
    input goes through its matrix product; the sparse one through the product over the non-zero entries, finding
    them included (the model finds them once per minibatch for its two ATAC encoders).
    """
    import torch

    from scmvp_scvi._sparse_input import FeatureMajorLinear, non_zero_entries, sparse_linear

    generator = torch.Generator().manual_seed(0)
    layer = FeatureMajorLinear(torch.nn.Linear(n_features, n_hidden))
    rows = []
    for density in densities:
        x = torch.rand(n_cells, n_features, generator=generator)
        x = torch.where(x < density, torch.log1p(x * 1e4), torch.zeros(()))
        timings = {}
        for name in ("dense", "sparse"):
            samples = []
            for repeat in range(WARMUP_STEPS + 20):
                start = time.perf_counter()
                if name == "sparse":
                    entries = non_zero_entries(x, max_density=1.0)
                    h = sparse_linear(entries, layer.weight_by_feature, layer.bias)
                else:
                    h = layer(x)
                h.square().sum().backward()
                layer.zero_grad()
                if repeat >= WARMUP_STEPS:
                    samples.append((time.perf_counter() - start) * 1e3)
            timings[f"{name}_ms"] = round(float(np.median(samples)), 2)
        rows.append({"density": density, **timings})
    return rows


def multivi_participant(mdata, batch_size: int, steps: int) -> tuple:
    """MULTIVI (its default model), its optimiser and minibatches of the same size from its own loader."""
    import scvi
    from scvi.train import TrainingPlan

    multivi_data = mdata.copy()
    scvi.model.MULTIVI.setup_mudata(multivi_data, modalities={"rna_layer": "rna", "atac_layer": "atac"})
    multivi = scvi.model.MULTIVI(multivi_data)
    loader = multivi._make_data_loader(multivi_data, batch_size=batch_size, shuffle=True)
    batches = [batch for _, batch in zip(range(WARMUP_STEPS + steps), loader, strict=False)]
    return multivi.module, TrainingPlan(multivi.module).configure_optimizers()["optimizer"], batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="paired .h5mu (modalities rna, atac)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per phase")
    parser.add_argument("--n-centroids", type=int, default=15, help="mixture components of the joint phase")
    parser.add_argument("--atac-likelihoods", nargs="+", default=["zip", "poisson"], help="SCMVP's ATAC models to time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--table", type=Path, default=None, help="default: docs/training_step.md at batch size 64")
    args = parser.parse_args()

    import mudata as md
    import scvi
    import torch
    from scvi.train import TrainingPlan

    import scmvp_scvi
    from scmvp_scvi._sparse_input import SPARSE_INPUT_MAX_DENSITY

    scvi.settings.seed = args.seed
    mdata = md.read_h5mu(args.data)
    scmvp_scvi.SCMVP.setup_mudata(mdata)
    model = scmvp_scvi.SCMVP(mdata, n_centroids=args.n_centroids)
    loader = model._make_data_loader(mdata, batch_size=args.batch_size, shuffle=True)
    # the same minibatches for every model
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == WARMUP_STEPS + args.steps:
            break

    def optimizer(module):
        return TrainingPlan(module).configure_optimizers()["optimizer"]

    result = {
        "data": args.data.name,
        "n_cells": mdata.n_obs,
        "n_genes": mdata["rna"].n_vars,
        "n_peaks": mdata["atac"].n_vars,
        "batch_size": args.batch_size,
        "timed_steps": len(batches) - WARMUP_STEPS,
        "scmvp_scvi": scmvp_scvi.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    density = float(np.mean([batch["atac"].count_nonzero().item() / batch["atac"].numel() for batch in batches]))
    result["atac_density"] = round(density, 5)
    participants = {}
    for likelihood in args.atac_likelihoods:
        for phase in ("pretraining", "joint"):
            scvi.settings.seed = args.seed
            model = scmvp_scvi.SCMVP(mdata, n_centroids=args.n_centroids, atac_likelihood=likelihood)
            if phase == "joint":
                model.initialize_gmm()  # KMeans with n_centroids on the joint latent, as after pretraining
            participants[(likelihood, phase)] = (model.module, optimizer(model.module), batches)
    participants["multivi"] = multivi_participant(mdata, args.batch_size, args.steps)
    timings = time_steps(participants, len(batches))
    result["scmvp"] = {likelihood: {} for likelihood in args.atac_likelihoods}
    for likelihood in args.atac_likelihoods:
        for phase in ("pretraining", "joint"):
            result["scmvp"][likelihood][phase] = timings[(likelihood, phase)]
    result["multivi"] = timings["multivi"]
    peak_layers = time_peak_layers(participants, mdata["atac"].n_vars)
    result["peak_layers"] = {
        f"SCMVP {key[1]}, ATAC {key[0]}" if isinstance(key, tuple) else "MULTIVI": value
        for key, value in peak_layers.items()
    }
    densities = sorted({round(density, 4), 0.01, 0.02, 0.05, 0.1, 0.2})  # that of the data, then denser
    result["sparse_input_max_density"] = SPARSE_INPUT_MAX_DENSITY
    result["first_layer"] = time_first_layer(args.batch_size, mdata["atac"].n_vars, model.module.n_hidden, densities)

    args.results.mkdir(parents=True, exist_ok=True)
    # runs on other minibatch sizes keep their own file beside that of the docs page's default run
    default_size = args.batch_size == parser.get_default("batch_size")
    size = "" if default_size else f"_batch{args.batch_size}"
    path = args.results / f"training_step_{args.data.stem}{size}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    command = "python benchmarks/training_step.py" + ("" if default_size else f" --batch-size {args.batch_size}")
    table = render_table(result, command)
    print(table)
    target = args.table or (ROOT / "docs" / "training_step.md" if default_size else None)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(table)


def render_table(result: dict, command: str) -> str:
    """The docs page: what was measured, the command, and the median milliseconds of each part."""
    parts = ("forward_ms", "backward_ms", "optimizer_ms", "step_ms")
    multivi_step = result["multivi"]["step_ms"]

    def row(label: str, timing: dict) -> str:
        ratio = timing["step_ms"] / multivi_step
        return f"| {label} | " + " | ".join(str(timing[part]) for part in parts) + f" | {ratio:.2f} |"

    rows = [
        row(f"SCMVP {phase}, ATAC {likelihood}", phases[phase])
        for likelihood, phases in result["scmvp"].items()
        for phase in ("pretraining", "joint")
    ]
    rows.append(row("MULTIVI", result["multivi"]))
    layer_rows = "\n".join(
        f"| {row['density']:.2%} | {row['dense_ms']} | {row['sparse_ms']} |" for row in result["first_layer"]
    )
    peak_rows = "\n".join(
        f"| {label} | {row['layers']} / {row['calls']} | {row['forward_ms']} | {row['backward_ms']} | "
        f"{row['step_ms']} | {(row['forward_ms'] + row['backward_ms']) / row['step_ms']:.0%} |"
        for label, row in result.get("peak_layers", {}).items()
    )
    faster = [row["density"] for row in result["first_layer"] if row["sparse_ms"] < row["dense_ms"]]
    threshold = result.get("sparse_input_max_density")
    verdict = (
        f"The product over the non-zero entries is faster up to {max(faster):.1%} of non-zero entries"
        if faster
        else "The product over the non-zero entries is slower at every density, that of the data included"
    ) + (
        f"; the ATAC encoders use it on the CPU up to {threshold:.0%}, and multiply the dense minibatch above."
        if threshold is not None
        else "."
    )
    return (
        "# Cost of a training step\n\n"
        f"One training step on {result['data']} ({result['n_cells']:,} cells, {result['n_genes']:,} genes, "
        f"{result['n_peaks']:,} peaks; {result['atac_density']:.2%} of the ATAC entries of a minibatch are "
        f"non-zero), minibatches of {result['batch_size']} cells, median of {result['timed_steps']} steps after "
        "warm-up, the models taking turns step by step; CPU only "
        f"({result['machine']}, {result['torch_threads']} threads, torch {result['torch']}), "
        f"scmvp_scvi {result['scmvp_scvi']}. Data loading is not counted; the optimiser is the one scvi-tools' "
        "`TrainingPlan` builds (fused Adam). SCMVP is timed with each ATAC likelihood (`zip`: the zero-inflated "
        "Poisson, `poisson`: no zero-inflation head), MULTIVI (its default model) on minibatches of the same "
        "size. Produced by:\n\n"
        f"```bash\n{command}\n```\n\n"
        "| model and phase | forward (ms) | backward (ms) | optimiser (ms) | step (ms) | step / MULTIVI's |\n"
        "|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\n"
        + (
            "Where the time goes: the matrix products of the layers as wide as the peaks (an encoder's input "
            "layer, a decoder's output layer), timed inside further steps of each model and phase (median of "
            "10; these steps are timed alone, not in turns). A layer counts once per use: the cycle head runs "
            "the ATAC encoder on the decoded means as well as on the data. SCMVP's ATAC encoders compute their "
            "first layer on the data from its non-zero entries (see the last table); those products count here, "
            "finding the entries does not.\n\n"
            "| model and phase | peak-wide layers / uses per step | their forward products (ms) | their "
            "backward products (ms) | step (ms) | share of the step |\n|---|---|---|---|---|---|\n"
            f"{peak_rows}\n\n"
            if peak_rows
            else ""
        )
        + "The first layer of an ATAC encoder alone (forward and backward, "
        f"{result['batch_size']} cells x {result['n_peaks']:,} features into 128 hidden units, random entries at "
        f"each density; finding the non-zero entries counted), in milliseconds. {verdict}\n\n"
        "| non-zero entries | dense input | non-zero entries only |\n|---|---|---|\n"
        f"{layer_rows}\n"
    )


if __name__ == "__main__":
    main()
