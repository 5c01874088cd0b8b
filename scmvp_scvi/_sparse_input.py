"""Encoder input layers fed only the non-zero entries of a minibatch (the peaks of ATAC data).

A minibatch of 64 snare_cortex cells has 0.4% of its peak entries non-zero, and the transform the encoders apply
maps zero to zero. The first layer of an ATAC encoder therefore only needs the weights of the peaks a minibatch
holds: gathering those rows is the same product as the dense one (up to the order of the sums) at a fraction of
its cost on the CPU, forward and backward.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from scvi.nn import FCLayers
from torch import nn
from torch.nn import functional as F

# Above this fraction of non-zero entries the dense product is used (benchmarks/training_step.py times both).
SPARSE_INPUT_MAX_DENSITY = 0.02


class NonZeroEntries(NamedTuple):
    """The non-zero entries of an ``(n_obs, n_features)`` encoder input: ``values`` at ``(rows, cols)``."""

    rows: torch.Tensor
    cols: torch.Tensor
    values: torch.Tensor
    n_obs: int


def non_zero_entries(x: torch.Tensor, max_density: float = SPARSE_INPUT_MAX_DENSITY) -> NonZeroEntries | None:
    """Return the non-zero entries of ``x`` on the CPU when at most ``max_density`` of it; else ``None``.

    On a GPU the dense product is cheap and finding the entries would wait for the device, so ``None``.
    """
    if x.device.type != "cpu" or x.dim() != 2:
        return None
    rows, cols = x.nonzero(as_tuple=True)
    if rows.numel() > max_density * x.numel():
        return None
    return NonZeroEntries(rows, cols, x[rows, cols], x.shape[0])


class FeatureMajorLinear(nn.Module):
    """:class:`torch.nn.Linear` with its weight stored transposed: one contiguous row per input feature.

    The product over the non-zero entries of a sparse input (:func:`sparse_linear`) gathers and updates the
    rows of the features a minibatch holds, which is fast only in this layout; the dense product is as fast as
    :class:`~torch.nn.Linear`'s. The parameter is ``weight_by_feature`` (``(in_features, out_features)``) and
    ``weight`` its ``(out_features, in_features)`` view. State dicts hold ``weight`` as :class:`~torch.nn.Linear`
    does, so models saved before or after this layout load either way.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight_by_feature = nn.Parameter(linear.weight.detach().t().contiguous())
        self.bias = linear.bias
        self.register_state_dict_post_hook(_save_as_linear)
        self.register_load_state_dict_pre_hook(_load_from_linear)

    @property
    def weight(self) -> torch.Tensor:
        """The ``(out_features, in_features)`` weight, a view of ``weight_by_feature``."""
        return self.weight_by_feature.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute ``x @ weight.T + bias``."""
        # x @ weight_by_feature: its weight gradient x.T @ grad comes in the parameter's own layout
        h = x @ self.weight_by_feature
        return h if self.bias is None else h + self.bias


def _save_as_linear(module: FeatureMajorLinear, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    state_dict[prefix + "weight"] = state_dict.pop(prefix + "weight_by_feature").t()


def _load_from_linear(module: FeatureMajorLinear, state_dict: dict, prefix: str, *args) -> None:
    if prefix + "weight" in state_dict:
        state_dict[prefix + "weight_by_feature"] = state_dict.pop(prefix + "weight").t()


class SparseInputFCLayers(FCLayers):
    """scvi-tools' one-layer :class:`~scvi.nn.FCLayers` whose linear map is a :class:`FeatureMajorLinear`.

    Covariates are injected as ``FCLayers`` does, and :meth:`set_online_update_hooks` (scArches) freezes the
    rows of the input features, leaving those of the covariates to train, as it freezes the columns of a
    :class:`~torch.nn.Linear`.
    """

    def _build_layer(self, n_in: int, n_out: int, layer_num: int) -> nn.Sequential:
        layer = super()._build_layer(n_in, n_out, layer_num)
        layer[0] = FeatureMajorLinear(layer[0])
        return layer

    def _is_linear_layer(self, layer: nn.Module) -> bool:
        return isinstance(layer, nn.Linear | FeatureMajorLinear)

    def set_online_update_hooks(self, hook_first_layer: bool = True) -> None:
        """Let only the covariates' weights of the first layer train (scArches)."""
        self.hooks = []
        n_covariates = sum(self.n_cat_list)

        def covariate_rows_only(grad: torch.Tensor) -> torch.Tensor:
            kept = torch.zeros_like(grad)
            if n_covariates > 0:
                kept[-n_covariates:] = grad[-n_covariates:]
            return kept

        if hook_first_layer:
            linear = self.fc_layers[0][0]
            self.hooks.append(linear.weight_by_feature.register_hook(covariate_rows_only))
            self.hooks.append(linear.bias.register_hook(torch.zeros_like))


def sparse_linear(x: NonZeroEntries, weight_by_feature: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Compute ``x @ weight_by_feature + bias`` from the non-zero entries of ``x``.

    Each cell is one bag of the weight rows of its features, weighted by their values and summed (torch's
    ``embedding_bag``, whose backward pass adds into the rows of the features present). Gradients reach the
    weight and the bias; the input values get none (they are data).
    """
    rows, cols, values = x.rows, x.cols, x.values
    if len(rows) > 1 and bool((rows[1:] < rows[:-1]).any()):  # each cell's entries must be consecutive
        order = torch.argsort(rows, stable=True)
        rows, cols, values = rows[order], cols[order], values[order]
    offsets = torch.searchsorted(rows, torch.arange(x.n_obs, device=rows.device))
    h = F.embedding_bag(cols, weight_by_feature, offsets, mode="sum", per_sample_weights=values)
    return h if bias is None else h + bias


def with_covariate_entries(
    x: NonZeroEntries, n_features: int, n_cat_list: list[int], cat_list: tuple[torch.Tensor, ...]
) -> NonZeroEntries:
    """``x`` with the one-hot covariate columns that scvi-tools' ``FCLayers`` appends to its input.

    ``n_cat_list`` is the layer's own list (0 for a covariate it ignores); column ``n_features + offset + c``
    holds 1 for a cell of category ``c``.
    """
    rows, cols, values = [x.rows], [x.cols], [x.values]
    offset = n_features
    cells = torch.arange(x.n_obs, device=x.rows.device)
    for n_cat, cat in zip(n_cat_list, cat_list, strict=False):
        if n_cat > 1:
            rows.append(cells)
            cols.append(offset + cat.reshape(-1).long())
            values.append(torch.ones(x.n_obs, dtype=x.values.dtype, device=x.values.device))
        offset += n_cat
    if len(rows) == 1:
        return x
    return NonZeroEntries(torch.cat(rows), torch.cat(cols), torch.cat(values), x.n_obs)
