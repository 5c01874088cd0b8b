"""User-facing SCMVP model: setup, training, and outputs written back into the MuData."""

from __future__ import annotations

import functools
import logging
import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from mudata import MuData
from scipy import sparse
from scvi import REGISTRY_KEYS, settings
from scvi.data import AnnDataManager
from scvi.data.fields import (
    MuDataCategoricalJointObsField,
    MuDataCategoricalObsField,
    MuDataLayerField,
)
from scvi.model.base import ArchesMixin, BaseModelClass, UnsupervisedTrainingMixin, VAEMixin

from ._distributed import computed_once
from ._gmm_init import LEIDEN_RESOLUTION, cluster_statistics, kmeans_labels, leiden_labels, subsampled_labels
from ._memory import check_output_fits
from ._minify import MinifiedMuDataMixin, minified_type
from ._modalities import (
    MISSING_MODALITY_OPTIONS,
    OBS_COLUMN,
    OBSERVED_MODALITIES_KEY,
    describe_counts,
    modality_counts,
    observed_modalities,
)
from ._module import SCMVPModule
from ._progress import PhaseProgressBar, quiet_lightning
from ._training_plan import SCMVPTrainingPlan
from ._validation import (
    check_alignment,
    check_counts,
    check_obs_keys,
    check_saved_features,
    check_trainable,
    layer_matrix,
    resolve_modalities,
)

logger = logging.getLogger(__name__)

# what the progress bar of each training phase says
PHASE_LABELS = {"pretraining": "pretraining", "joint": "joint training"}
# how the initial mixture components get their variances
GMM_VARIANCES = ("posterior", "means")
# how to get an imputation that does not fit in memory
IMPUTATION_ROUTES = (
    "Impute fewer features (gene_list=, region_list=), keep the ATAC values above a threshold as a sparse "
    "matrix (atac_threshold=0.05), impute a subset of cells at a time (indices=), or write both layers into an "
    ".h5mu file chunk by chunk: mdata.write(path); model.write_imputed_values(path)."
)
# inference output holding the posterior of each latent
POSTERIORS = {"joint": "qz", "rna": "qz_rna", "atac": "qz_atac"}
# arguments added after 0.1.0 whose defaults differ from what a model saved without them was trained with
SAVED_WITHOUT = {"encoder_input": "counts", "balance_target": "uniform"}


def default_epochs(n_cells: int) -> int:
    """Epochs per training phase when none are given.

    Follows the authors' recipe (10 epochs up to 5k cells, 15 above) and guarantees about 1,000 optimisation
    steps of 64 cells per phase on small data sets, capped at 200 epochs.
    """
    recipe = 10 if n_cells <= 5_000 else 15
    return int(min(200, max(recipe, math.ceil(1_000 * 64 / max(n_cells, 1)))))


def _check_resolution(resolution: float, argument: str) -> None:
    """Reject a Leiden resolution that is not a positive number, before any training."""
    if isinstance(resolution, bool) or not isinstance(resolution, numbers.Real) or not resolution > 0:
        raise ValueError(
            f"{argument} must be a positive number (Leiden resolution; higher gives more mixture components), "
            f"got {resolution!r}."
        )


def _check_n_centroids(n_centroids: int, n_obs: int) -> None:
    """Reject a number of mixture components that is not an integer between 1 and the number of cells."""
    if isinstance(n_centroids, bool) or not (isinstance(n_centroids, int | np.integer) and 1 <= n_centroids <= n_obs):
        raise ValueError(
            f"n_centroids must be an integer between 1 and the number of cells ({n_obs}), got {n_centroids!r}."
        )


def _accepts_mdata(method: Callable) -> Callable:
    """Let ``method`` also take its data object as ``mdata=`` (the name before 0.2.0), with a FutureWarning.

    The scvi-tools name ``adata`` is used throughout, so that methods inherited from scvi-tools, which pass
    ``adata=``, reach the overridden ones.
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if "mdata" in kwargs:
            if "adata" in kwargs:
                raise TypeError(f"{method.__name__}() got both adata and mdata; pass the MuData once, as adata.")
            warnings.warn(
                f"{method.__name__}(mdata=...) is deprecated and will be removed; pass the MuData as adata=...",
                FutureWarning,
                stacklevel=2,
            )
            kwargs["adata"] = kwargs.pop("mdata")
        return method(self, *args, **kwargs)

    return wrapper


class SCMVP(VAEMixin, UnsupervisedTrainingMixin, ArchesMixin, MinifiedMuDataMixin, BaseModelClass):
    """Single-cell multi-view profiler (scMVP) for paired scRNA-seq and scATAC-seq.

    A deep generative model with attention-based encoders for each modality, a joint (shared-layer) posterior,
    a Gaussian-mixture prior over cell clusters, a two-channel decoder gated by the cluster responsibilities and
    a cycle-consistency head (Li et al., Genome Biology 2022).

    Query data with new batches can be mapped onto a trained model with :meth:`load_query_data` (scArches):
    only the weights of the new batch covariates are trained. :meth:`differential_expression` and
    :meth:`differential_accessibility` compare groups of cells through the model. The model also has the methods
    every scvi-tools model has, e.g. ``save``, ``get_elbo``, ``get_marginal_ll``, ``get_reconstruction_error``,
    ``differential_abundance``, ``to_device`` and ``view_anndata_setup``.

    Parameters
    ----------
    mdata
        MuData registered with :meth:`setup_mudata`.
    n_latent
        Dimension of the joint latent space.
    n_hidden
        Hidden units of the encoder and decoder layers.
    n_centroids
        Number of mixture components ``K``. ``None`` (default) takes the number of Leiden clusters of the
        pretrained joint latent, found during :meth:`train`.
    n_heads
        Heads of the ATAC self-attention; must divide ``n_hidden``.
    dropout_rate
        Dropout in the encoders.
    rna_likelihood
        ``"nb"`` (default), ``"zinb"`` or ``"poisson"``.
    atac_likelihood
        ``"poisson"``, ``"zip"`` (zero-inflated Poisson), ``"nb"`` or ``"bernoulli"`` (models peaks as
        open/closed). ``None`` (default): ``"poisson"`` on paired data, where it clusters and imputes as well as
        the zero-inflated Poisson, gives better mixture clusters and trains faster; ``"zip"`` on a mosaic
        (``setup_mudata(missing_modality="zero_rows")``), whose latent it clusters better (see the ablation and
        mosaic pages).
    encode_covariates
        Also give batch and categorical covariates to the encoders (they always enter the decoder).
    rna_weight, atac_weight
        Weights of the RNA and ATAC reconstruction terms. The defaults (1.0, 1.0) give the evidence lower bound;
        the original scMVP uses (3.0, 0.1), under which the ATAC encoder learns far less (see the ablation page).
    joint_atac_weight
        Weight of the ATAC reconstruction from the joint posterior in joint training only (default ``None``:
        ``atac_weight``); the ATAC-only terms keep ``atac_weight``.
    cluster_weight, joint_kl_weight, cycle_kl_weight
        Weights of the cluster terms and of the joint and cycle KL terms (0.5, 0.1, 0.1, as in the original).
    encoder_input
        What the encoders see: ``"normalized"`` (default: log counts per 10,000 for RNA and log TF-IDF for ATAC, as
        the scMVP paper describes) or ``"counts"`` (as in the original code: ``log1p`` of the raw counts).
    balance_target
        What the balance cluster term pulls the cluster sizes towards: ``"prior"`` (default: the mixture weights,
        which start at the sizes of the initial clusters, so large cell types are not split and small ones not
        merged to even the sizes out) or ``"uniform"`` (equal clusters, as in the original scMVP).
    single_modality_weight
        Weight of the RNA-only and ATAC-only VAE terms in joint training. ``None`` (default): 0 on paired data,
        as in the original, where only pretraining trains the single-modality encoders; 1 on a mosaic
        (``setup_mudata(missing_modality="zero_rows")``), whose single-modality cells are embedded by those
        encoders.
    **module_kwargs
        Further arguments of :class:`~scmvp_scvi.SCMVPModule`.

    Examples
    --------
    >>> mdata = scmvp_scvi.data.synthetic_paired()
    >>> scmvp_scvi.SCMVP.setup_mudata(mdata)
    >>> model = scmvp_scvi.SCMVP(mdata)
    >>> model.train()
    >>> latent = model.get_latent_representation()  # also in mdata.obsm["X_scmvp"]
    """

    _module_cls = SCMVPModule
    _training_plan_cls = SCMVPTrainingPlan

    def __init__(
        self,
        mdata: MuData,
        n_latent: int = 20,
        n_hidden: int = 128,
        n_centroids: int | None = None,
        n_heads: int = 8,
        dropout_rate: float = 0.1,
        rna_likelihood: str = "nb",
        atac_likelihood: str | None = None,
        encode_covariates: bool = True,
        rna_weight: float = 1.0,
        atac_weight: float = 1.0,
        joint_atac_weight: float | None = None,
        cluster_weight: float = 0.5,
        joint_kl_weight: float = 0.1,
        cycle_kl_weight: float = 0.1,
        encoder_input: str = "normalized",
        balance_target: str = "prior",
        single_modality_weight: float | None = None,
        **module_kwargs,
    ):
        super().__init__(mdata)
        if n_centroids is not None:
            _check_n_centroids(n_centroids, self.summary_stats.n_cells)
        for name, value in (("n_latent", n_latent), ("n_hidden", n_hidden), ("n_heads", n_heads)):
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not 0 <= dropout_rate < 1:
            raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate!r}.")
        # defaults that depend on the design, resolved here so that init_params_ records them: a saved model, or a
        # query mapped onto it, rebuilds the same module
        if atac_likelihood is None:
            atac_likelihood = "zip" if self.is_mosaic else "poisson"
        if single_modality_weight is None:
            single_modality_weight = 1.0 if self.is_mosaic else 0.0
        n_cats_per_cov = (
            self.adata_manager.get_state_registry(REGISTRY_KEYS.CAT_COVS_KEY).n_cats_per_key
            if REGISTRY_KEYS.CAT_COVS_KEY in self.adata_manager.data_registry
            else None
        )
        self.module = self._module_cls(
            n_input_rna=self.summary_stats.n_vars,
            n_input_atac=self.summary_stats.n_atac,
            n_batch=self.summary_stats.n_batch,
            n_cats_per_cov=n_cats_per_cov,
            n_latent=n_latent,
            n_hidden=n_hidden,
            n_centroids=n_centroids or 1,
            n_heads=n_heads,
            dropout_rate=dropout_rate,
            rna_likelihood=rna_likelihood,
            atac_likelihood=atac_likelihood,
            encode_covariates=encode_covariates,
            rna_weight=rna_weight,
            atac_weight=atac_weight,
            joint_atac_weight=joint_atac_weight,
            cluster_weight=cluster_weight,
            joint_kl_weight=joint_kl_weight,
            cycle_kl_weight=cycle_kl_weight,
            encoder_input=encoder_input,
            atac_idf=self._atac_idf() if encoder_input == "normalized" else None,
            balance_target=balance_target,
            single_modality_weight=single_modality_weight,
            library_fill=self._library_fill() if self.is_mosaic else None,
            **module_kwargs,
        )
        self.module.minified_data_type = self.minified_data_type
        self._update_summary()
        self.init_params_ = self._get_init_params(locals())

    @property
    def is_mosaic(self) -> bool:
        """Whether the model was set up with ``missing_modality="zero_rows"`` (paired and single-modality cells)."""
        return OBSERVED_MODALITIES_KEY in self.adata_manager.data_registry

    @property
    def observed_modality_counts(self) -> dict[str, int]:
        """Number of paired, RNA-only and ATAC-only cells in the registered MuData."""
        if not self.is_mosaic:
            return {"paired": self.adata.n_obs, "rna_only": 0, "atac_only": 0}
        return modality_counts(self.adata.obs[OBS_COLUMN])

    def _library_fill(self) -> tuple[float, float]:
        """Mean log library size of the cells measured in each modality, for the cells that were not."""
        fill = []
        for key in (REGISTRY_KEYS.X_KEY, REGISTRY_KEYS.ATAC_X_KEY):
            totals = np.asarray(self.adata_manager.get_from_registry(key).sum(axis=1)).ravel()
            fill.append(float(np.log(totals[totals > 0]).mean()))
        return fill[0], fill[1]

    def view_anndata_setup(self, adata: MuData | None = None, hide_state_registries: bool = False) -> None:
        """Print the registered fields (scvi-tools' summary) and the number of paired and single-modality cells."""
        super().view_anndata_setup(adata, hide_state_registries)
        target = self._target(adata)
        if self.is_mosaic and OBS_COLUMN in target.obs:
            print(f"Cells: {describe_counts(modality_counts(target.obs[OBS_COLUMN]))}")

    def _atac_idf(self) -> torch.Tensor:
        """Inverse document frequency of each peak over the registered cells, ``n / (1 + cells open)``."""
        matrix = self.adata_manager.get_from_registry(REGISTRY_KEYS.ATAC_X_KEY)
        n_open = np.asarray((matrix > 0).sum(axis=0)).ravel()  # sparse or dense alike
        return torch.as_tensor(matrix.shape[0] / (1.0 + n_open), dtype=torch.float32)

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(cls, *args, **kwargs):
        """Not supported: SCMVP needs paired modalities; use :meth:`setup_mudata`."""
        raise NotImplementedError("SCMVP works on paired RNA + ATAC in a MuData; use SCMVP.setup_mudata(mdata).")

    @classmethod
    def setup_annbatch(cls, *args, **kwargs):
        """Not supported: SCMVP reads both modalities of a MuData; use :meth:`setup_mudata`."""
        raise NotImplementedError(
            "SCMVP reads paired RNA + ATAC from a MuData, not from an annbatch collection; use "
            "SCMVP.setup_mudata(mdata)."
        )

    @classmethod
    def prepare_query_anndata(cls, *args, **kwargs):
        """Not supported: query data for SCMVP is a MuData; use :meth:`prepare_query_mudata`."""
        raise NotImplementedError("SCMVP maps MuData queries; use SCMVP.prepare_query_mudata(mdata, reference_model).")

    @classmethod
    def setup_mudata(
        cls,
        mdata: MuData,
        rna_layer: str | None = None,
        atac_layer: str | None = None,
        batch_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        modalities: dict[str, str] | None = None,
        missing_modality: str | None = None,
        **kwargs,
    ) -> None:
        """Register the RNA and ATAC modalities of a MuData for SCMVP.

        Every cell needs counts in both modalities, unless ``missing_modality="zero_rows"`` says that an all-zero
        row means "not measured": then paired, RNA-only and ATAC-only cells train one model together (a mosaic),
        and the outputs predict the missing modality of the single-modality cells. A MuData whose modalities hold
        different sets of cells comes into this form with :func:`scmvp_scvi.pp.pad_unpaired`.

        Parameters
        ----------
        mdata
            MuData with paired RNA and ATAC counts (the same cells, in the same order, in both modalities).
        rna_layer
            Layer of the RNA modality with raw counts (``None``: ``.X``).
        atac_layer
            Layer of the ATAC modality with peak counts or binary peaks (``None``: ``.X``).
        batch_key
            Column with the batch of each cell, in ``mdata.obs`` unless ``modalities["batch_key"]`` names a
            modality.
        categorical_covariate_keys
            Columns with further categorical covariates (same lookup as ``batch_key``).
        modalities
            Maps setup arguments to modality names. Defaults to ``{"rna_layer": "rna", "atac_layer": "atac"}``.
        missing_modality
            ``None`` (default): every cell was measured in both modalities, and a cell without counts in one is an
            error. ``"zero_rows"``: a cell whose row is all zeros in one modality was not measured there. Which
            modalities each cell has is stored in ``mdata.obs["_scmvp_observed_modalities"]`` (``"paired"``,
            ``"rna_only"``, ``"atac_only"``); at least one cell must be paired.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        if missing_modality not in MISSING_MODALITY_OPTIONS:
            raise ValueError(
                f"missing_modality must be one of {MISSING_MODALITY_OPTIONS}, got {missing_modality!r}; "
                "'zero_rows' means that an all-zero row marks a modality that was not measured in that cell."
            )
        mosaic = missing_modality == "zero_rows"
        resolved = resolve_modalities(mdata, modalities)
        setup_method_args["setup_args"]["modalities"] = resolved
        mods = cls._create_modalities_attr_dict(resolved, setup_method_args)
        check_alignment(mdata, [mods.rna_layer, mods.atac_layer])
        minified = minified_type(mdata)
        if minified is None:  # a minified MuData has no counts left to check
            check_counts(mdata.mod[mods.rna_layer], rna_layer, mods.rna_layer, allow_empty_cells=mosaic)
            check_counts(mdata.mod[mods.atac_layer], atac_layer, mods.atac_layer, allow_empty_cells=mosaic)
        if mosaic and minified is not None:
            # the counts are gone; the modalities each cell has were kept from the full MuData
            if OBS_COLUMN not in mdata.obs:
                raise ValueError(
                    f"missing_modality='zero_rows' needs the counts or mdata.obs[{OBS_COLUMN!r}], and this minified "
                    "MuData has neither; minify it with model.minify_mudata() from a model set up on the mosaic."
                )
        elif mosaic:
            layers = {"rna": (mods.rna_layer, rna_layer), "atac": (mods.atac_layer, atac_layer)}
            matrices = {m: layer_matrix(mdata.mod[name], layer, name) for m, (name, layer) in layers.items()}
            where = {m: f"mdata[{n!r}]" + (f".layers[{lay!r}]" if lay else ".X") for m, (n, lay) in layers.items()}
            mdata.obs[OBS_COLUMN] = observed_modalities(matrices["rna"], matrices["atac"], mdata.obs_names, where)
        if batch_key is not None:
            check_obs_keys(mdata, [batch_key], mods.batch_key, "batch_key")
        if categorical_covariate_keys is not None:
            if isinstance(categorical_covariate_keys, str):
                raise TypeError("categorical_covariate_keys must be a list of column names, not a string.")
            check_obs_keys(
                mdata, categorical_covariate_keys, mods.categorical_covariate_keys, "categorical_covariate_keys"
            )

        fields = [
            MuDataLayerField(
                REGISTRY_KEYS.X_KEY, rna_layer, mod_key=mods.rna_layer, is_count_data=True, mod_required=True
            ),
            MuDataLayerField(
                REGISTRY_KEYS.ATAC_X_KEY, atac_layer, mod_key=mods.atac_layer, is_count_data=True, mod_required=True
            ),
            MuDataCategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key, mod_key=mods.batch_key),
            MuDataCategoricalJointObsField(
                REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys, mod_key=mods.categorical_covariate_keys
            ),
        ]
        if mosaic:
            fields.append(MuDataCategoricalObsField(OBSERVED_MODALITIES_KEY, OBS_COLUMN))
        if minified is not None:
            fields += cls._get_fields_for_mudata_minification(minified)
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(mdata, **kwargs)
        cls.register_manager(adata_manager)

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int | None = None,
        pretrain_epochs: int | None = None,
        lr: float = 5e-3,
        batch_size: int = 64,
        weight_decay: float = 1e-6,
        eps: float = 0.01,
        n_epochs_kl_warmup: int | None = None,
        n_epochs_cluster_warmup: int | None = None,
        leiden_resolution: float = LEIDEN_RESOLUTION,
        gmm_variance: str = "posterior",
        gmm_max_cells: int | None = 50_000,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        train_size: float | None = None,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        early_stopping: bool = False,
        datasplitter_kwargs: dict | None = None,
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ) -> None:
        """Train SCMVP: pretraining, mixture-prior initialisation, then joint training.

        1. **Pretraining** (``pretrain_epochs``): the RNA, ATAC and joint encoders each learn as a VAE with a
           standard normal prior through the shared decoder channels, so the three latent spaces align.
        2. **Mixture initialisation**: the joint latent means of all cells are clustered (Leiden at
           ``leiden_resolution`` when ``n_centroids`` is ``None``, else KMeans with ``n_centroids`` clusters)
           and the mixture prior takes each cluster's mean, variance and fraction.
        3. **Joint training** (``max_epochs``): the full objective with the mixture prior, the cluster-gated
           decoder and the cycle-consistency head; the KL terms are warmed up linearly over
           ``n_epochs_kl_warmup`` epochs and the cluster terms over ``n_epochs_cluster_warmup`` epochs.

        Calling ``train`` again continues joint training.

        Parameters
        ----------
        max_epochs
            Epochs of joint training; default from the data size (:func:`default_epochs`).
        pretrain_epochs
            Epochs of pretraining (0 skips it); same default as ``max_epochs``.
        lr, weight_decay, eps
            Adam settings (scMVP's defaults).
        batch_size
            Minibatch size.
        n_epochs_kl_warmup
            KL warm-up of joint training. ``None`` (default): none after pretraining, whose warm-up over its whole
            length brought the KL to full weight, and half of ``max_epochs`` when joint training starts without
            pretraining (``pretrain_epochs=0``). The original restarts the warm-up after pretraining
            (``max_epochs // 2``).
        n_epochs_cluster_warmup
            Warm-up of the cluster terms in joint training. ``None`` (default): half of ``max_epochs`` at the switch
            to the mixture prior, none when training continues. 0 puts them at full weight at once, as in the
            original.
        leiden_resolution
            Resolution of the Leiden clustering that sets ``K`` when ``n_centroids`` is ``None``. Higher values give
            more, smaller components. The default, 0.5, gives about as many components as there are cell types on
            the benchmark data; the original method used 1.0, which splits the large populations.
        gmm_variance
            Variances of the initial mixture components: ``"posterior"`` (default) matches each component to its
            cells' posteriors (spread of their means plus their mean posterior variance), so that the prior KL does
            not jump at the switch; ``"means"`` (the original) uses only the spread of their posterior means.
        gmm_max_cells
            The mixture initialisation clusters at most this many randomly chosen cells (all cells when ``None``);
            the others join their most likely component. Keeps the initialisation linear in the number of cells.
        accelerator, devices
            Lightning device settings (``"cpu"``, ``"gpu"``, ``"auto"``...).
        train_size, validation_size, shuffle_set_split
            Data split (scvi-tools' :class:`~scvi.dataloaders.DataSplitter`; default 90% train).
        early_stopping
            Stop each phase when ``early_stopping_monitor`` (default ``"elbo_validation"``) stops improving.
        datasplitter_kwargs
            Extra arguments of the data splitter.
        plan_kwargs
            Extra arguments of :class:`scvi.train.TrainingPlan`; they override the ones above.
        **trainer_kwargs
            Extra arguments of :class:`scvi.train.Trainer` (e.g. ``enable_progress_bar=False``).
        """
        self._require_counts("Training")
        n_cells = self.adata.n_obs
        check_trainable(n_cells, train_size)
        max_epochs = default_epochs(n_cells) if max_epochs is None else max_epochs
        pretrain_epochs = default_epochs(n_cells) if pretrain_epochs is None else pretrain_epochs
        for name, value in (("max_epochs", max_epochs), ("pretrain_epochs", pretrain_epochs)):
            if not isinstance(value, int | np.integer) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
        common = {
            "accelerator": accelerator,
            "devices": devices,
            "train_size": train_size,
            "validation_size": validation_size,
            "shuffle_set_split": shuffle_set_split,
            "batch_size": batch_size,
            "early_stopping": early_stopping,
            "datasplitter_kwargs": datasplitter_kwargs,
            **trainer_kwargs,
        }

        def plan(kl_warmup: int | None, cluster_warmup: int | None = None) -> dict:
            return {
                "lr": lr,
                "weight_decay": weight_decay,
                "eps": eps,
                "n_epochs_kl_warmup": kl_warmup,
                "n_epochs_cluster_warmup": cluster_warmup,
                **(plan_kwargs or {}),
            }

        if gmm_variance not in GMM_VARIANCES:
            raise ValueError(f"gmm_variance must be one of {GMM_VARIANCES}, got {gmm_variance!r}.")
        _check_resolution(leiden_resolution, "leiden_resolution")
        n_centroids = self.init_params_["non_kwargs"]["n_centroids"]
        self._check_gmm_max_cells(gmm_max_cells, n_centroids, "gmm_max_cells")
        pretrained_now = switched_now = False
        if not bool(self.module.gmm_initialized):
            pretrained_now, switched_now = pretrain_epochs > 0, True
            if pretrained_now:
                logger.info("Pretraining for %d epochs.", pretrain_epochs)
                self._train_phase(
                    "pretraining", max_epochs=pretrain_epochs, plan_kwargs=plan(pretrain_epochs), **common
                )
            self.initialize_gmm(
                resolution=leiden_resolution if n_centroids is None else None,  # a fixed K uses KMeans
                batch_size=max(batch_size, 256),
                variance=gmm_variance,
                max_cells=gmm_max_cells,
            )
        if max_epochs > 0:
            half = max(1, max_epochs // 2)
            # by default, warm up only what has not been warmed up: a KL that no pretraining raised, and the
            # cluster terms at the switch to the mixture prior (not when training continues)
            if n_epochs_kl_warmup is None:
                kl_warmup = half if switched_now and not pretrained_now and not self.is_trained_ else 0
            else:
                kl_warmup = n_epochs_kl_warmup
            if n_epochs_cluster_warmup is None:
                cluster_warmup = half if switched_now else 0
            else:
                cluster_warmup = n_epochs_cluster_warmup
            plan_kwargs = plan(kl_warmup, cluster_warmup)
            self._train_phase("joint", max_epochs=max_epochs, plan_kwargs=plan_kwargs, **common)

    def _train_phase(self, phase: str, **kwargs) -> None:
        """Run one training phase and append its metrics (including new ones) to ``model.history``."""
        previous, was_trained = self.history_, self.is_trained_
        # scvi-tools only extends metrics it has already seen; start a fresh history and merge it ourselves
        self.history_, self.is_trained_ = None, False
        # Lightning keeps the train/eval mode it is given, and scvi-tools leaves the module in eval mode
        self.module.train()
        if kwargs.get("enable_progress_bar", True) and kwargs.get("simple_progress_bar", True):
            # our bar replaces scvi-tools' anonymous "Epoch x/n" one
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), PhaseProgressBar(PHASE_LABELS[phase])]
            kwargs["simple_progress_bar"] = False
        try:
            with quiet_lightning():
                super().train(**kwargs)
        finally:
            self.is_trained_ = self.is_trained_ or was_trained
            self.history_ = _merge_history(previous, self.history_, phase)

    @torch.no_grad()  # not inference_mode: new parameters created here must be trainable
    def initialize_gmm(
        self,
        resolution: float | None = None,
        batch_size: int | None = None,
        variance: str = "posterior",
        max_cells: int | None = 50_000,
        n_centroids: int | Literal["leiden"] | None = None,
    ) -> np.ndarray:
        """Initialise the mixture prior from clusters of the current joint latent of all cells.

        Called by :meth:`train` after pretraining; call it again to start joint training from another mixture
        (e.g. another ``K``), then :meth:`train` continues from it. ``K`` is saved with the model.

        Parameters
        ----------
        resolution
            Resolution of the Leiden clustering that sets ``K`` (see ``leiden_resolution`` in :meth:`train`);
            ``None`` means 0.5. Only for a ``K`` from Leiden.
        batch_size
            Minibatch size for encoding the cells.
        variance
            ``"posterior"`` (default): component variances match the cells' posteriors (spread of the posterior
            means plus the mean posterior variance); ``"means"``: the spread of the means alone (the original).
        max_cells
            Cluster at most this many randomly chosen cells (all when ``None``); every other cell joins the
            cluster under which its latent is most likely, and the components are then computed from all cells.
        n_centroids
            How ``K`` is chosen. An integer: KMeans with that many clusters. ``"leiden"``: the number of Leiden
            clusters at ``resolution``. ``None`` (default): the model's own setting, that is its ``n_centroids``
            before the first initialisation (Leiden when that was ``None``) and its current ``K`` afterwards (KMeans
            with ``K`` clusters), unless a ``resolution`` is given, which asks for Leiden.

        Returns
        -------
        The cluster label of each cell used for the initialisation.
        """
        if variance not in GMM_VARIANCES:
            raise ValueError(f"variance must be one of {GMM_VARIANCES}, got {variance!r}.")
        if isinstance(n_centroids, str) and n_centroids != "leiden":
            raise ValueError(f'n_centroids must be an integer, "leiden" or None, got {n_centroids!r}.')
        if n_centroids is None and resolution is None:
            # the user's n_centroids until the first initialisation, the resolved K afterwards
            n_centroids = self.init_params_["non_kwargs"]["n_centroids"]
        if n_centroids is None or n_centroids == "leiden":
            resolution = LEIDEN_RESOLUTION if resolution is None else resolution
            _check_resolution(resolution, "resolution")
            n_centroids = None
            cluster = functools.partial(leiden_labels, resolution=resolution, seed=settings.seed)
        else:
            _check_n_centroids(n_centroids, self.adata.n_obs)
            if resolution is not None:
                raise ValueError(
                    f"resolution ({resolution!r}) sets K through Leiden clusters, and n_centroids ({n_centroids}) "
                    "asks for KMeans with a fixed K: pass only one of them."
                )
            cluster = functools.partial(kmeans_labels, n_clusters=int(n_centroids), seed=settings.seed)
        self._check_gmm_max_cells(max_cells, n_centroids, "max_cells")

        def clusters_and_components() -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
            outputs = {"mean": (self.module.n_latent, lambda inf, gen: inf["qz"].loc)}
            if variance == "posterior":
                outputs["var"] = (self.module.n_latent, lambda inf, gen: inf["qz"].variance)
            posterior = self._fill(self.adata, None, batch_size, outputs, decode=False)
            labels = subsampled_labels(posterior["mean"], cluster, max_cells, seed=settings.seed)
            return labels, cluster_statistics(posterior["mean"], labels, posterior_variances=posterior.get("var"))

        # in a DDP job, one process clusters and every process gets the same mixture
        labels, (means, variances, weights) = computed_once(clusters_and_components)
        self.module.initialize_gmm(
            torch.as_tensor(means, dtype=torch.float32),
            torch.as_tensor(variances, dtype=torch.float32),
            torch.as_tensor(weights, dtype=torch.float32),
        )
        self.init_params_["non_kwargs"]["n_centroids"] = len(weights)
        logger.info("Mixture prior initialised with K = %d components.", len(weights))
        self._update_summary()
        return labels

    @staticmethod
    def _check_gmm_max_cells(max_cells: int | None, n_centroids: int | None, argument: str) -> None:
        if max_cells is not None and (not isinstance(max_cells, int | np.integer) or max_cells < 2):
            raise ValueError(f"{argument} must be an integer of at least 2 or None, got {max_cells!r}.")
        if n_centroids is not None and max_cells is not None and max_cells < n_centroids:
            raise ValueError(
                f"{argument} ({max_cells}) must be at least the number of mixture components ({n_centroids})."
            )

    @classmethod
    @_accepts_mdata
    def load(cls, dir_path: str, adata: MuData | None = None, **kwargs) -> SCMVP:
        """Load a model saved with :meth:`save`.

        Parameters
        ----------
        dir_path
            Directory the model was saved to.
        adata
            MuData to attach (same modalities and features as at training); default: the one saved with the
            model (``save(..., save_anndata=True)``).
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load` (``accelerator``, ``device``, ``prefix``).
        """
        saved_file = Path(dir_path) / f"{kwargs.get('prefix') or ''}model.pt"
        target = cls
        if saved_file.exists():  # a missing file gets scvi-tools' own message below
            # the file scvi-tools' save writes: a dict with the model's feature names and attributes
            saved = torch.load(saved_file, map_location="cpu", weights_only=False)
            if adata is not None:
                modalities = saved["attr_dict"]["registry_"]["setup_args"]["modalities"]
                check_saved_features(adata, saved["var_names"], modalities)
            saved_args = saved["attr_dict"].get("init_params_", {}).get("non_kwargs", {})
            legacy = {name: value for name, value in SAVED_WITHOUT.items() if name not in saved_args}
            if legacy:  # rebuild with the settings it was trained with, not today's defaults
                init = functools.partialmethod(cls.__init__, **legacy)
                target = type(cls.__name__, (cls,), {"__init__": init, "__module__": cls.__module__})
        # scvi-tools' loader reports "File ... already downloaded" for every local model file
        download_logger = logging.getLogger("scvi.data._download")
        level = download_logger.level
        download_logger.setLevel(max(level, logging.WARNING))
        try:
            model = super(SCMVP, target).load(dir_path, adata=adata, **kwargs)
        finally:
            download_logger.setLevel(level)
        model.__class__ = cls
        if model.history_:  # saved before histories were portable: so that a new save is
            model.history_ = {key: _portable(frame) for key, frame in model.history_.items()}
        model._update_summary()
        return model

    def __repr__(self) -> str:
        # scvi-tools prints a colour-highlighted summary and returns ""; a plain string reads the same in a
        # terminal, a notebook, a log file and inside containers
        return self.summary_string

    @property
    def n_centroids(self) -> int:
        """Current number of mixture components."""
        return self.module.prior.n_components

    def _update_summary(self) -> None:
        module = self.module
        k = f"K={module.prior.n_components}" if bool(module.gmm_initialized) else "K=set at training"
        batches = self.summary_stats.n_batch
        self._model_summary_string = (
            f"SCMVP model: n_latent={module.n_latent}, n_hidden={module.n_hidden}, {k}; "
            f"RNA: {module.n_input_rna} genes, {module.rna_likelihood} likelihood; "
            f"ATAC: {module.n_input_atac} peaks, {module.atac_likelihood} likelihood; "
            f"{batches} batch{'es' if batches != 1 else ''}."
        )
        if self.is_mosaic:
            self._model_summary_string += f" Cells: {describe_counts(self.observed_modality_counts)}."

    # ------------------------------------------------------------------ minibatch iteration
    @property
    def modality_names(self) -> dict[str, str]:
        """Names of the RNA and ATAC modalities in the registered MuData."""
        modalities = self.adata_manager.registry["setup_args"]["modalities"]
        return {"rna": modalities["rna_layer"], "atac": modalities["atac_layer"]}

    def _batches(
        self,
        adata: MuData | None,
        indices: Sequence[int] | None,
        batch_size: int | None,
        use_mean: bool = True,
        transform_batch: str | int | None = None,
        decode: bool | Sequence[str] = True,
        single_modalities: bool = False,
        dataloader: Iterable[dict[str, torch.Tensor]] | None = None,
        **data_loader_kwargs,
    ) -> Iterator[tuple[dict, dict | None]]:
        """Yield ``(inference outputs, generative outputs)`` per minibatch, in cell order.

        The minibatches come from ``dataloader`` when given (scvi-tools' inference data loaders), else from the
        cells ``indices`` of ``adata``. ``decode`` is ``True`` (both modalities), ``False`` (no decoding) or the
        modalities to decode, e.g. ``("rna",)``.
        """
        batch_code = self._batch_code(transform_batch)
        if dataloader is None:
            adata = self._validate_anndata(adata)
            loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size, **data_loader_kwargs)
        elif adata is not None or indices is not None:
            raise ValueError("Pass either a dataloader or adata/indices, not both: the dataloader chooses the cells.")
        else:
            loader = dataloader
        was_training = self.module.training
        self.module.eval()
        try:
            for tensors in loader:
                inference_inputs = self.module._get_inference_input(tensors)
                inference_outputs = self.module.inference(
                    **inference_inputs, use_mean=use_mean, single_modalities=single_modalities
                )
                generative_outputs = None
                if decode:
                    generative_inputs = self.module._get_generative_input(tensors, inference_outputs, batch_code)
                    modalities = ("rna", "atac") if decode is True else tuple(decode)
                    generative_outputs = self.module.generative(**generative_inputs, modalities=modalities)
                yield inference_outputs, generative_outputs
        finally:
            self.module.train(was_training)

    def _batch_code(self, transform_batch: str | int | None) -> int | None:
        if transform_batch is None:
            return None
        mapping = list(self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping)
        if transform_batch not in mapping:
            raise ValueError(f"transform_batch {transform_batch!r} is not a registered batch; choose from {mapping}.")
        return mapping.index(transform_batch)

    def _n_cells(self, adata: MuData | None, indices: Sequence[int] | None) -> int:
        return len(indices) if indices is not None else self._validate_anndata(adata).n_obs

    def _chunks(
        self,
        adata: MuData | None,
        indices: Sequence[int] | None,
        batch_size: int | None,
        outputs: dict[str, tuple[int, Callable]],
        n_draws: int = 1,
        **kwargs,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield each minibatch's outputs as float32 arrays, averaged over ``n_draws`` passes of the model.

        ``outputs`` maps a name to ``(n_features, compute)``, where ``compute(inference, generative)`` returns
        the minibatch's rows. With ``n_draws > 1`` each minibatch is encoded (and decoded) that many times, so
        the average never needs a second cells x features array.
        """
        chunk, draw = None, 0
        for inference_outputs, generative_outputs in self._batches(adata, indices, batch_size, **kwargs):
            values = {name: compute(inference_outputs, generative_outputs) for name, (_, compute) in outputs.items()}
            chunk = values if draw == 0 else {name: chunk[name] + value for name, value in values.items()}
            draw += 1
            if draw < n_draws:
                continue
            yield {name: (value / n_draws).float().cpu().numpy() for name, value in chunk.items()}
            chunk, draw = None, 0

    def _fill(
        self,
        adata,
        indices,
        batch_size,
        outputs: dict[str, tuple[int, Callable]],
        thresholds: dict[str, float] | None = None,
        memory_hint: str = "Compute it for fewer cells at a time (indices=).",
        **kwargs,
    ) -> dict[str, np.ndarray | sparse.csr_matrix]:
        """Compute several per-minibatch outputs in one pass, each into a float32 array.

        ``outputs`` is as in :meth:`_chunks`. Outputs named in ``thresholds`` keep only values at or above
        their threshold and are built chunk by chunk into a CSR matrix. Dense arrays are preallocated when the
        number of cells is known (not for a ``dataloader=`` in ``kwargs``), so that no second copy of a large
        output is ever held, after a check that they fit in the available memory (``memory_hint`` says how to
        need less).
        """
        thresholds = thresholds or {}
        # a dataloader's cells are known only once it has run: collect its chunks, else write into place
        n_cells = None if kwargs.get("dataloader") is not None else self._n_cells(adata, indices)
        dense = {name: n for name, (n, _) in outputs.items() if name not in thresholds}
        if n_cells is not None:
            sizes = " and ".join(f"{n_cells:,} x {n:,}" for n in dense.values())
            check_output_fits(4 * n_cells * sum(dense.values()), f"A dense float32 output of {sizes}", memory_hint)
        arrays = {
            name: [] if n_cells is None else np.empty((n_cells, n), dtype=np.float32) for name, n in dense.items()
        }
        arrays.update({name: [] for name in thresholds})
        start = 0
        for chunk in self._chunks(adata, indices, batch_size, outputs, **kwargs):
            for name, values in chunk.items():
                if name in thresholds:
                    values[values < thresholds[name]] = 0
                    arrays[name].append(sparse.csr_matrix(values))
                elif n_cells is None:
                    arrays[name].append(values)
                else:
                    arrays[name][start : start + len(values)] = values
            start += len(values)
        for name, (n, _) in outputs.items():
            if name in thresholds:
                blocks = arrays[name] or [sparse.csr_matrix((0, n), dtype=np.float32)]
                arrays[name] = sparse.vstack(blocks, format="csr")
            elif n_cells is None:
                arrays[name] = np.concatenate(arrays[name]) if arrays[name] else np.empty((0, n), dtype=np.float32)
        return arrays

    def _latent(
        self, adata, indices, batch_size, modality: str, give_mean: bool = True, return_dist: bool = False, **kwargs
    ) -> dict[str, np.ndarray]:
        """Posterior means (or one sample per cell), and variances with ``return_dist``, without writing anything."""
        if modality not in POSTERIORS:
            raise ValueError(f"modality must be one of {tuple(POSTERIORS)}, got {modality!r}.")
        key = POSTERIORS[modality]
        n_latent = self.module.n_latent

        def measured(inf: dict, values: torch.Tensor) -> torch.Tensor:
            # a mosaic cell without this modality has no posterior of it: NaN, not a made-up position
            rows = inf.get(f"has_{modality}")
            return values if rows is None else values.masked_fill(~rows, float("nan"))

        if return_dist:
            outputs = {
                "mean": (n_latent, lambda inf, gen: measured(inf, inf[key].loc)),
                "variance": (n_latent, lambda inf, gen: measured(inf, inf[key].scale.square())),
            }
        else:
            outputs = {
                "mean": (n_latent, lambda inf, gen: measured(inf, inf[key].loc if give_mean else inf[key].sample()))
            }
        kwargs.update(decode=False, single_modalities=modality != "joint")
        return self._fill(adata, indices, batch_size, outputs, **kwargs)

    def _target(self, adata: MuData | None) -> MuData:
        return self.adata if adata is None else adata

    # ------------------------------------------------------------------ outputs
    @_accepts_mdata
    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: MuData | None = None,
        indices: Sequence[int] | None = None,
        give_mean: bool = True,
        mc_samples: int = 5_000,
        batch_size: int | None = None,
        return_dist: bool = False,
        dataloader: Iterable[dict[str, torch.Tensor]] | None = None,
        *,
        modality: str = "joint",
        key_added: str | None = "X_scmvp",
        **data_loader_kwargs,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Latent representation of each cell.

        Parameters
        ----------
        adata
            MuData to embed (default: the one the model was set up with); must have the same modalities and
            features.
        indices
            Cells to embed (default all). Results are written to the MuData only when all cells are embedded.
        give_mean
            Return posterior means; otherwise one sample per cell.
        mc_samples
            Unused: the posteriors are normal, so their means are exact. Kept for scvi-tools compatibility.
        batch_size
            Minibatch size.
        return_dist
            Return the means and the variances of the posteriors, ``(means, variances)``, and write nothing.
        dataloader
            Minibatches to embed instead of ``adata`` and ``indices`` (an scvi-tools inference data loader, e.g.
            ``model._make_data_loader(...)``); nothing is written.
        modality
            ``"joint"`` (the scMVP latent), ``"rna"`` or ``"atac"`` (single-modality encoders). On a mosaic, the
            rows of cells that lack that modality are NaN.
        key_added
            ``.obsm`` key of the MuData for the result (``"X_scmvp"``; ``"X_scmvp_rna"``/``"X_scmvp_atac"``
            for single modalities). ``None`` writes nothing.
        **data_loader_kwargs
            Passed to the data loader built from ``adata``.

        Returns
        -------
        Array of shape ``(n_cells, n_latent)``, or the pair ``(means, variances)`` with ``return_dist=True``.
        """
        self._check_if_trained(warn=False)
        latent = self._latent(
            adata, indices, batch_size, modality, give_mean, return_dist, dataloader=dataloader, **data_loader_kwargs
        )
        if return_dist:
            return latent["mean"], latent["variance"]
        if key_added is not None and indices is None and dataloader is None:
            name = key_added if modality == "joint" else f"{key_added}_{modality}"
            self._target(adata).obsm[name] = latent["mean"]
        return latent["mean"]

    @_accepts_mdata
    @torch.inference_mode()
    def get_cluster_assignments(
        self,
        adata: MuData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        key_added: str | None = "scmvp_cluster",
    ) -> np.ndarray:
        """Mixture component of each cell: the argmax of ``p(c | z)`` at the joint posterior mean.

        Labels go to the MuData's ``.obs[key_added]`` (categorical) and the probabilities to its
        ``.obsm[key_added + "_probs"]`` when all cells are assigned.

        Returns
        -------
        Integer labels, shape ``(n_cells,)``.
        """
        self._check_if_trained(warn=False)
        # inference evaluates the responsibilities at the posterior mean
        outputs = {"probs": (self.module.prior.n_components, lambda inf, gen: inf["log_gamma"].exp())}
        probs = self._fill(adata, indices, batch_size, outputs, decode=False)["probs"]
        labels = probs.argmax(1)
        if key_added is not None and indices is None:
            target = self._target(adata)
            categories = [str(k) for k in range(probs.shape[1])]
            target.obs[key_added] = pd.Categorical([str(k) for k in labels], categories=categories)
            target.obsm[f"{key_added}_probs"] = probs
        return labels

    @_accepts_mdata
    @torch.inference_mode()
    def get_imputed_values(
        self,
        adata: MuData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        n_samples: int = 1,
        give_mean: bool = True,
        layer_key: str | None = "scmvp_imputed",
        *,
        gene_list: Sequence[str] | None = None,
        region_list: Sequence[str] | None = None,
        atac_threshold: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray | sparse.csr_matrix]:
        """Denoised (imputed) counts of both modalities at each cell's observed library size.

        RNA: the mean of the RNA observation model. ATAC: the mean count of the peak (for
        ``atac_likelihood="bernoulli"``, the probability that it is open). Zero-inflation is not applied: these
        are the values before technical dropout.

        The dense result takes 4 bytes per cell and feature (1 GB for 10,000 cells and 25,000 peaks). When it
        would not fit in the available memory, a :class:`MemoryError` says so before any work; the routes that
        need less are a subset of features (``gene_list``, ``region_list``), sparse ATAC values
        (``atac_threshold``), a subset of cells at a time (``indices``), or :meth:`write_imputed_values`, which
        writes both layers into an ``.h5mu`` file chunk by chunk.

        Parameters
        ----------
        adata, indices, batch_size
            As in :meth:`get_latent_representation`.
        n_samples
            With ``give_mean=False``, average the decoded means over this many posterior samples.
        give_mean
            Decode the posterior mean of the latent (deterministic, default).
        layer_key
            Layer name for the results in the RNA and ATAC modalities, written for a modality when all its
            features of all cells are imputed; ``None`` writes nothing.
        gene_list, region_list
            Genes and peaks to impute (default all), in the order given.
        atac_threshold
            If given, ATAC values below it are set to zero and the ATAC result is a CSR matrix, built chunk by
            chunk (0.05 keeps about the peaks a ZIP model expects to hold a read in one cell in twenty).

        Returns
        -------
        ``(rna, atac)``: float32 arrays of shape ``(n_cells, n_genes)`` and ``(n_cells, n_peaks)`` (ATAC a CSR
        matrix with ``atac_threshold``), computed minibatch by minibatch.
        """
        self._check_if_trained(warn=False)
        draws = 1 if give_mean else n_samples
        if not isinstance(draws, int | np.integer) or draws < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        if atac_threshold is not None and not atac_threshold >= 0:
            raise ValueError(f"atac_threshold must be a non-negative number, got {atac_threshold!r}.")
        target = self._target(adata)
        names = self.modality_names
        columns = {
            "rna": self._feature_indices(target.mod[names["rna"]].var_names, gene_list, "gene_list"),
            "atac": self._feature_indices(target.mod[names["atac"]].var_names, region_list, "region_list"),
        }
        subset = {"rna": gene_list is not None, "atac": region_list is not None}

        def denoised(modality: str) -> tuple[int, Callable]:
            key, cols = f"px_{modality}", torch.as_tensor(columns[modality])

            def compute(inf: dict, gen: dict) -> torch.Tensor:
                values = gen[key].denoised()
                return values.index_select(1, cols.to(values.device)) if subset[modality] else values

            return len(cols), compute

        values = self._fill(
            adata,
            indices,
            batch_size,
            {"rna": denoised("rna"), "atac": denoised("atac")},
            thresholds=None if atac_threshold is None else {"atac": atac_threshold},
            memory_hint=IMPUTATION_ROUTES,
            n_draws=draws,
            use_mean=give_mean,
        )
        if layer_key is not None and indices is None:
            for modality in ("rna", "atac"):
                if not subset[modality]:
                    target.mod[names[modality]].layers[layer_key] = values[modality]
        return values["rna"], values["atac"]

    @_accepts_mdata
    @torch.inference_mode()
    def write_imputed_values(
        self,
        filename: str | Path,
        adata: MuData | None = None,
        batch_size: int | None = None,
        layer_key: str = "scmvp_imputed",
        overwrite: bool = False,
    ) -> None:
        """Write the imputed values of every cell into a layer of an ``.h5mu`` file, one minibatch at a time.

        For data sets whose imputed matrices do not fit in memory: memory stays at one minibatch, and the file
        grows by 4 bytes per cell and feature. The values are those of :meth:`get_imputed_values` with
        ``give_mean=True``. Read them lazily afterwards, e.g. ``mudata.read_h5mu(filename, backed=True)`` and
        ``mdata["atac"].layers["scmvp_imputed"]``, or in slices with h5py.

        Parameters
        ----------
        filename
            An ``.h5mu`` file holding the cells of ``adata`` in the same order (e.g. written with
            ``mdata.write(filename)``); its RNA and ATAC modalities get the layer ``layer_key``.
        adata
            The MuData whose cells are imputed (default: the model's).
        batch_size
            Minibatch size.
        layer_key
            Name of the layer in both modalities.
        overwrite
            Replace existing layers of that name; otherwise they are an error.
        """
        import h5py
        from anndata.io import read_elem

        self._check_if_trained(warn=False)
        target = self._validate_anndata(adata)
        path = Path(filename)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; write the MuData there first: mdata.write({str(path)!r}).")
        names = self.modality_names
        with h5py.File(path, "r+") as file:
            # everything is checked before the first value is computed
            for name in names.values():
                group = f"mod/{name}"
                if group not in file:
                    raise ValueError(f"{path} has no modality {name!r}; it must hold the model's MuData.")
                for axis, expected in (("obs", target.mod[name].obs_names), ("var", target.mod[name].var_names)):
                    stored = read_elem(file[f"{group}/{axis}"]).index
                    if not stored.equals(pd.Index(expected)):
                        raise ValueError(
                            f"The {axis}_names of modality {name!r} in {path} differ from the MuData's "
                            f"({len(stored):,} against {len(expected):,}); write this MuData to the file first."
                        )
                layer = f"{group}/layers/{layer_key}"
                if layer in file and not overwrite:
                    raise ValueError(f"{path} already has the layer {layer!r}; pass overwrite=True to replace it.")
            datasets = {}
            for modality, name in names.items():
                layers = file.require_group(f"mod/{name}/layers")
                if layer_key in layers:
                    del layers[layer_key]
                shape = (target.n_obs, target.mod[name].n_vars)
                rows = max(1, min(shape[0], (1 << 20) // max(shape[1], 1)))  # chunks of about 4 MB
                dataset = layers.create_dataset(layer_key, shape=shape, dtype=np.float32, chunks=(rows, shape[1]))
                dataset.attrs["encoding-type"], dataset.attrs["encoding-version"] = "array", "0.2.0"
                datasets[modality] = dataset
            outputs = {
                modality: (target.mod[name].n_vars, lambda inf, gen, m=modality: gen[f"px_{m}"].denoised())
                for modality, name in names.items()
            }
            start = 0
            for chunk in self._chunks(target, None, batch_size, outputs):
                for modality, values in chunk.items():
                    datasets[modality][start : start + len(values)] = values
                start += len(values)
        logger.info("Imputed values of %d cells written to the layer %r of %s.", start, layer_key, path)

    @_accepts_mdata
    @torch.inference_mode()
    def get_normalized_expression(
        self,
        adata: MuData | None = None,
        indices: Sequence[int] | None = None,
        gene_list: Sequence[str] | None = None,
        transform_batch: str | None = None,
        library_size: float = 1.0,
        batch_size: int | None = None,
        return_numpy: bool = False,
    ) -> pd.DataFrame | np.ndarray:
        """Normalised expression ``rho`` (proportions summing to one per cell) times ``library_size``.

        Parameters
        ----------
        gene_list
            Genes to return (default all).
        transform_batch
            Decode every cell as if it came from this batch (batch-corrected expression).
        library_size
            Scale of the proportions (e.g. 1e4 for CP10k-like values).
        return_numpy
            Return an array instead of a cells x genes DataFrame.
        """
        self._check_if_trained(warn=False)
        names = self._target(adata).mod[self.modality_names["rna"]].var_names
        columns = self._feature_indices(names, gene_list, "gene_list")
        cols = slice(None) if gene_list is None else columns  # no copy of every column
        outputs = {"rho": (len(columns), lambda inf, gen: gen["px_rna"].scale[:, cols] * library_size)}
        hint = "Pass fewer genes (gene_list=) or cells (indices=) at a time."
        kwargs = {"memory_hint": hint, "transform_batch": transform_batch, "decode": ("rna",)}
        values = self._fill(adata, indices, batch_size, outputs, **kwargs)["rho"]
        return (
            values
            if return_numpy
            else pd.DataFrame(values, index=self._obs_names(adata, indices), columns=names[columns])
        )

    @_accepts_mdata
    @torch.inference_mode()
    def get_normalized_accessibility(
        self,
        adata: MuData | None = None,
        indices: Sequence[int] | None = None,
        region_list: Sequence[str] | None = None,
        transform_batch: str | None = None,
        threshold: float | None = None,
        batch_size: int | None = None,
        return_numpy: bool = False,
    ) -> pd.DataFrame | np.ndarray | sparse.csr_matrix:
        """Probability that each peak is open in each cell, under the ATAC observation model.

        Parameters
        ----------
        region_list
            Peaks to return (default all).
        transform_batch
            Decode every cell as if it came from this batch.
        threshold
            If given, probabilities below it are set to zero and the result is sparse (CSR matrix, or a sparse
            DataFrame), built chunk by chunk.
        return_numpy
            Return an array (or CSR matrix) instead of a DataFrame.
        """
        self._check_if_trained(warn=False)
        if threshold is not None and not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}.")
        names = self._target(adata).mod[self.modality_names["atac"]].var_names
        columns = self._feature_indices(names, region_list, "region_list")
        index = self._obs_names(adata, indices)
        # the probabilities of the asked peaks alone: only the decoder's softmax needs every peak
        cols = None if region_list is None else torch.as_tensor(columns, device=self.device)
        outputs = {"p_open": (len(columns), lambda inf, gen: gen["px_atac"].prob_nonzero(cols))}
        hint = "Pass fewer peaks (region_list=) or cells (indices=), or threshold= for a sparse result."
        kwargs = {"memory_hint": hint, "transform_batch": transform_batch, "decode": ("atac",)}
        thresholds = None if threshold is None else {"p_open": threshold}
        values = self._fill(adata, indices, batch_size, outputs, thresholds, **kwargs)["p_open"]
        if return_numpy:
            return values
        if threshold is None:
            return pd.DataFrame(values, index=index, columns=names[columns])
        return pd.DataFrame.sparse.from_spmatrix(values, index=index, columns=names[columns])

    # ------------------------------------------------------------------ differential testing
    def _posterior_samples(
        self,
        adata: MuData,
        modality: str,
        indices: Sequence[int],
        transform_batch: str | None = None,
        n_samples_overall: int | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """One posterior draw per cell (of ``n_samples_overall`` cells drawn with replacement, if given).

        RNA: normalised expression ``rho``; ATAC: the probability that each peak is open.
        """
        indices = np.asarray(indices)
        if n_samples_overall is not None:
            indices = np.sort(np.random.default_rng(settings.seed).choice(indices, n_samples_overall))
        if modality == "rna":
            outputs = {"values": (self.module.n_input_rna, lambda inf, gen: gen["px_rna"].scale)}
        else:
            outputs = {"values": (self.module.n_input_atac, lambda inf, gen: gen["px_atac"].prob_nonzero())}
        kwargs = {"use_mean": False, "transform_batch": transform_batch, "decode": (modality,)}
        return self._fill(adata, indices, batch_size, outputs, **kwargs)["values"]

    def _differential(self, modality: str, options: dict, bayes_kwargs: dict) -> pd.DataFrame:
        """Shared body of the two tests; ``options`` holds the public methods' arguments by name."""
        from ._differential import comparisons, differential_test, group_statistics

        self._check_if_trained(warn=False)
        o = options
        batchid1, batchid2, batch_size = o["batchid1"], o["batchid2"], o["batch_size"]
        adata = self._validate_anndata(o["adata"])
        # errors on the groups come before any decoding
        pairs = comparisons(adata.obs, o["groupby"], o["group1"], o["group2"], o["idx1"], o["idx2"])
        if o["batch_correction"] and (batchid1 is not None or batchid2 is not None):
            raise ValueError("batchid1/batchid2 choose the batches to decode in; leave batch_correction=False then.")
        mapping = list(self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping)
        for ids in (batchid1, batchid2):
            unknown = [b for b in ids or [] if b not in mapping]
            if unknown:
                raise ValueError(f"Batches {unknown} are not registered batches; choose from {mapping}.")
        layer = self.modality_names[modality]
        statistics = None
        if o["all_stats"] and self.minified_data_type is None:  # the counts the model was set up with
            key = REGISTRY_KEYS.X_KEY if modality == "rna" else REGISTRY_KEYS.ATAC_X_KEY
            statistics = group_statistics(self.get_from_registry(adata, key), modality)

        def model_fn(data, indices, transform_batch=None, n_samples_overall=None):
            return self._posterior_samples(data, modality, indices, transform_batch, n_samples_overall, batch_size)

        def representation_fn(data, indices):
            return self.get_latent_representation(data, indices=indices, batch_size=batch_size, key_added=None)

        rename = {}
        if modality == "atac":
            rename = {"proba_de": "proba_da", "proba_not_de": "proba_not_da", "scale1": "est_prob1"}
            rename |= {"scale2": "est_prob2", **{f"lfc_{k}": f"effect_{k}" for k in ("mean", "median", "std")}}
            rename |= {"lfc_min": "effect_min", "lfc_max": "effect_max"}
        result = differential_test(
            self.get_anndata_manager(adata, required=True),
            model_fn,
            representation_fn if o["filter_outlier_cells"] else None,
            pairs,
            adata.mod[layer].var_names,
            statistics,
            o["mode"],
            o["fdr_target"],
            "proba_de" if modality == "rna" else "proba_da",
            rename,
            batchid1=batchid1,
            batchid2=batchid2,
            use_observed_batches=not o["batch_correction"],
            **bayes_kwargs,
        )
        if modality == "atac":
            result.insert(result.columns.get_loc("est_prob2") + 1, "effect_size", result.est_prob1 - result.est_prob2)
        return result

    @_accepts_mdata
    def differential_expression(
        self,
        adata: MuData | None = None,
        groupby: str | None = None,
        group1: str | Sequence[str] | None = None,
        group2: str | None = None,
        idx1: Sequence[int] | Sequence[bool] | str | None = None,
        idx2: Sequence[int] | Sequence[bool] | str | None = None,
        mode: str = "change",
        delta: float = 0.25,
        batch_size: int | None = None,
        all_stats: bool = True,
        batch_correction: bool = False,
        batchid1: Sequence[str] | None = None,
        batchid2: Sequence[str] | None = None,
        fdr_target: float = 0.05,
        filter_outlier_cells: bool = False,
        **kwargs,
    ) -> pd.DataFrame:
        r"""Differential expression between groups of cells, from the model's normalised expression.

        Each group's cells are decoded from posterior samples (``n_samples_overall`` draws of cells, 5,000 by
        default), and scvi-tools' :class:`~scvi.model.base.DifferentialComputation` compares the two groups'
        expression: in ``"change"`` mode the posterior probability that the log2 fold change exceeds ``delta``
        in absolute value (Boyeau et al. 2019), in ``"vanilla"`` mode the Bayes factor of higher expression in
        group 1 (Lopez et al. 2018).

        Parameters
        ----------
        adata
            MuData registered with the model (default: the one the model was set up with).
        groupby
            ``obs`` column of the groups, e.g. cell types or ``"scmvp_cluster"`` after
            :meth:`get_cluster_assignments`.
        group1
            Group(s) to test, each against ``group2``; default: every group of ``groupby``.
        group2
            Reference group; default: all other cells (``"rest"``).
        idx1, idx2
            Instead of ``groupby``: two cell sets (boolean mask, integer positions or a query on ``obs``);
            ``idx2`` defaults to the other cells.
        mode
            ``"change"`` (default) or ``"vanilla"``.
        delta
            Smallest absolute log2 fold change that counts as differential (``"change"`` mode).
        batch_size
            Minibatch size for decoding.
        all_stats
            Add observed statistics of each group: mean counts, fraction of cells expressing, mean counts
            per 10,000.
        batch_correction
            Decode every cell in every registered batch and pool the draws, so that the comparison does not
            reflect batch composition; otherwise each cell is decoded in its own batch.
        batchid1, batchid2
            Decode group 1 (group 2) in these batches only (with ``batch_correction=False``).
        fdr_target
            Posterior expected false discovery rate of the ``is_de_fdr_<fdr_target>`` flags (``"change"``
            mode).
        filter_outlier_cells
            Leave out the cells of each group that are outliers of the group in the joint latent space
            (:meth:`~scvi.model.base.DifferentialComputation.filter_outlier_cells`; encodes both groups once
            more per comparison).
        **kwargs
            Passed to :meth:`~scvi.model.base.DifferentialComputation.get_bayes_factors`, e.g.
            ``n_samples_overall``, ``pseudocounts``, ``use_permutation``.

        Returns
        -------
        One row per gene and comparison: ``proba_de``, ``proba_not_de``, ``bayes_factor``, ``scale1``,
        ``scale2`` (mean normalised expression), ``lfc_mean``/``median``/``std``/``min``/``max``, the FDR flag
        and, with ``all_stats``, the observed statistics; ``comparison``, ``group1`` and ``group2`` name the
        comparison when groups come from ``groupby``. Sorted by ``proba_de`` (``"bayes_factor"`` in vanilla
        mode) within each comparison.
        """
        return self._differential("rna", _arguments(locals()), {"delta": delta, **kwargs})

    @_accepts_mdata
    def differential_accessibility(
        self,
        adata: MuData | None = None,
        groupby: str | None = None,
        group1: str | Sequence[str] | None = None,
        group2: str | None = None,
        idx1: Sequence[int] | Sequence[bool] | str | None = None,
        idx2: Sequence[int] | Sequence[bool] | str | None = None,
        mode: str = "change",
        delta: float = 0.05,
        two_sided: bool = True,
        batch_size: int | None = None,
        all_stats: bool = True,
        batch_correction: bool = False,
        batchid1: Sequence[str] | None = None,
        batchid2: Sequence[str] | None = None,
        fdr_target: float = 0.05,
        filter_outlier_cells: bool = False,
        **kwargs,
    ) -> pd.DataFrame:
        """Differential accessibility between groups of cells, from the model's probability that a peak is open.

        The effect is the difference of the two groups' probabilities of an open peak (what
        :meth:`get_normalized_accessibility` returns), sampled from the posterior; in ``"change"`` mode a peak is
        differential with the posterior probability that the difference exceeds ``delta`` (in absolute value
        with ``two_sided``, else in favour of group 1).

        Parameters
        ----------
        adata, groupby, group1, group2, idx1, idx2, mode, batch_size, batch_correction, batchid1, batchid2
            As in :meth:`differential_expression`.
        filter_outlier_cells
            As in :meth:`differential_expression`.
        delta
            Smallest difference of open probabilities that counts as differential.
        two_sided
            Test for a change in either direction (default) or only for more accessible in group 1.
        all_stats
            Add the observed fraction of cells with the peak open in each group (``emp_prob1``,
            ``emp_prob2``) and its difference (``emp_effect``).
        fdr_target
            Posterior expected false discovery rate of the ``is_da_fdr_<fdr_target>`` flags.
        **kwargs
            Passed to :meth:`~scvi.model.base.DifferentialComputation.get_bayes_factors`.

        Returns
        -------
        One row per peak and comparison: ``proba_da``, ``proba_not_da``, ``bayes_factor``, ``est_prob1``,
        ``est_prob2`` (mean open probabilities), ``effect_size`` (their difference), ``effect_mean``/``median``/
        ``std``/``min``/``max`` of the sampled difference, the FDR flag, the observed statistics and the
        comparison's names, sorted by ``proba_da`` within each comparison.
        """

        def difference(p1, p2, pseudocounts):
            return p1 - p2

        def beyond_delta(samples):
            increase = samples >= delta
            return increase, samples <= -delta if two_sided else np.zeros_like(increase)

        bayes_kwargs = {"delta": delta, "pseudocounts": 0.0, "test_mode": "two", **kwargs}
        if mode == "change":
            bayes_kwargs = {"change_fn": difference, "m1_domain_fn": beyond_delta, **bayes_kwargs}
        return self._differential("atac", _arguments(locals()), bayes_kwargs)

    def _obs_names(self, adata: MuData | None, indices: Sequence[int] | None) -> pd.Index:
        names = self._target(adata).obs_names
        return names if indices is None else names[np.asarray(indices)]

    @staticmethod
    def _feature_indices(names: pd.Index, subset: Sequence[str] | None, argument: str) -> np.ndarray:
        if subset is None:
            return np.arange(len(names))
        positions = names.get_indexer(list(subset))
        if (positions < 0).any():
            missing = [s for s, p in zip(subset, positions, strict=True) if p < 0][:5]
            raise ValueError(f"{argument} has names that are not features of the model, e.g. {missing}.")
        return positions


# the arguments that differential_expression and differential_accessibility share
DIFFERENTIAL_ARGUMENTS = (
    "adata",
    "groupby",
    "group1",
    "group2",
    "idx1",
    "idx2",
    "mode",
    "all_stats",
    "batch_correction",
    "batchid1",
    "batchid2",
    "fdr_target",
    "batch_size",
    "filter_outlier_cells",
)


def _arguments(values: dict) -> dict:
    return {name: values[name] for name in DIFFERENTIAL_ARGUMENTS}


def _merge_history(
    previous: dict[str, pd.DataFrame] | None, new: dict[str, pd.DataFrame] | None, phase: str
) -> dict[str, pd.DataFrame] | None:
    """Append one phase's history to the previous one.

    Every frame is indexed by the epoch counted over all phases, so a metric that only one phase logs (e.g.
    ``kl_cycle_train``) lines up with ``train_loss``; ``training_phase`` records the phase of each epoch.
    """
    if not new:
        return previous
    new = {key: _portable(_as_float(frame)) for key, frame in new.items()}
    n_epochs = len(new["train_loss"]) if "train_loss" in new else 0
    new["training_phase"] = _portable(pd.DataFrame({"training_phase": np.full(n_epochs, phase, dtype=object)}))
    offset = len(previous["training_phase"]) if previous and "training_phase" in previous else 0
    merged = dict(previous or {})
    for key, frame in new.items():
        name = merged[key].index.name if key in merged else frame.index.name
        frame.index = pd.RangeIndex(offset, offset + len(frame), name=name)
        merged[key] = pd.concat([merged[key], frame]) if key in merged else frame
    return merged


def _portable(frame: pd.DataFrame) -> pd.DataFrame:
    """Give ``frame`` plain NumPy dtypes only, so that pandas 2 can load a model saved under pandas 3.

    pandas 3 labels columns with its own string dtype, which pandas 2 cannot unpickle.
    """
    frame.columns = pd.Index(list(frame.columns), dtype=object, name=frame.columns.name)
    for column in frame.columns:
        if not isinstance(frame[column].dtype, np.dtype):
            frame[column] = frame[column].astype(object)
    return frame


def _as_float(frame: pd.DataFrame) -> pd.DataFrame:
    """Copy of a logged metric with float values (the logger stores them as objects)."""
    try:
        return frame.astype("float64")
    except (TypeError, ValueError):
        return frame.copy()
