"""The scMVP generative model and its inference networks as a scvi-tools module."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from scvi import REGISTRY_KEYS
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn
from torch.distributions import Distribution, Normal, kl_divergence

from ._components import (
    ATACEncoder,
    GaussianMixturePrior,
    JointEncoder,
    Latents,
    PosteriorFusion,
    RNAEncoder,
    TwoChannelDecoder,
    rebuild_cluster_attention,
    running_statistics_kept,
)
from ._likelihoods import ATAC_LIKELIHOODS, LIKELIHOODS, RNA_LIKELIHOODS, observation_model
from ._modalities import OBSERVED_MODALITIES_KEY, masks
from ._sparse_input import NonZeroEntries, non_zero_entries

# what the encoders see: log1p of the counts (reference) or of depth-normalised RNA and TF-IDF ATAC
ENCODER_INPUTS = ("counts", "normalized")
BALANCE_TARGETS = ("uniform", "prior")


def _kl_standard_normal(q: Normal) -> torch.Tensor:
    return kl_divergence(q, Normal(torch.zeros_like(q.loc), torch.ones_like(q.scale))).sum(-1)


def _only(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-cell ``values`` kept where ``mask`` (``(n, 1)`` booleans) holds and zero elsewhere; all if no mask."""
    return values if mask is None else values * mask.reshape(-1).to(values.dtype)


# registry key of the ATAC library sizes stored by minify_mudata (scvi-tools has one for RNA only)
OBSERVED_LIB_SIZE_ATAC = "observed_lib_size_atac"


class SCMVPModule(BaseModuleClass):
    """scMVP: joint VAE of paired RNA and ATAC counts with a Gaussian-mixture prior.

    Inference uses three encoders: an RNA encoder (mask-attention branch), an ATAC encoder (self-attention branch)
    and the joint encoder whose shared layer combines both branches; its posterior is the scMVP latent. The
    single-modality posteriors are fused and tied to the joint one. The decoder has one channel per modality,
    both gated by an attention module driven by the cluster responsibilities ``p(c | z)``. The cycle-consistency
    head re-encodes the decoded means and ties their cluster assignments and fused posterior to those of the data.

    Training has two phases. Before :meth:`initialize_gmm` is called (pretraining), each encoder is trained as a
    VAE with a standard normal prior through the shared decoder channels and the cluster gate is neutral. After
    it, the mixture prior, the gate, the cluster terms and the cycle head are active.

    Parameters
    ----------
    n_input_rna
        Number of genes.
    n_input_atac
        Number of peaks.
    n_batch
        Number of batches (1 for none).
    n_cats_per_cov
        Number of categories of each extra categorical covariate.
    n_latent
        Latent dimension.
    n_hidden
        Hidden units of every encoder and decoder layer.
    n_centroids
        Initial number of mixture components; :meth:`initialize_gmm` may change it.
    n_heads
        Heads of the hidden-unit self-attention (must divide ``n_hidden``).
    dropout_rate
        Dropout in the encoders.
    rna_likelihood
        ``"nb"``, ``"zinb"`` or ``"poisson"``.
    atac_likelihood
        ``"zip"``, ``"poisson"``, ``"nb"`` or ``"bernoulli"`` (on binarised peaks).
    encode_covariates
        Also inject batch and categorical covariates into the encoders (they always enter the decoder).
    rna_weight, atac_weight
        Weights of the two reconstruction terms (the original scMVP uses 3.0 and 0.1).
    joint_atac_weight
        Weight, in joint training only, of the ATAC reconstruction from the joint posterior; ``None`` (default):
        ``atac_weight``. The ATAC-only terms keep ``atac_weight``. A lower value keeps the joint latent from
        fitting cell-specific ATAC noise once the mixture prior is in place, while pretraining (and the
        single-modality terms) still teach the ATAC encoder at ``atac_weight``.
    cluster_weight
        Weight of the cluster terms (consistency, sharpness, balance).
    joint_kl_weight
        Weight of ``KL(q_joint || q_fused)``.
    cycle_kl_weight
        Weight of ``KL(q_fused || q_fused of the re-encoded means)``.
    sharpness_weight, balance_weight
        Weights, inside the cluster terms, of the per-cell sharpness ``-sum_k gamma_k^2`` and of the negative
        entropy of the minibatch cluster marginal (minimising it spreads cells over clusters).
    balance_target
        What the balance term pulls the minibatch cluster marginal towards. ``"prior"`` (default): the mixture
        weights, i.e. the KL from the marginal to the (fixed in this term) mixture weights, which keeps every
        component in use without forcing the large cell types to split and the small ones to merge.
        ``"uniform"`` (the original scMVP): equal clusters, i.e. the negative entropy of the marginal.
    single_modality_weight
        Weight, in joint training, of the RNA-only and ATAC-only VAE terms (each single-modality posterior decodes
        its own modality and is pulled to the mixture prior). ``0`` (the original): only pretraining trains them,
        so in joint training the single-modality encoders only follow the joint posterior and the weaker one
        (usually ATAC) can collapse; ``1`` keeps both able to embed a cell on their own.
    normalize_encoder_input
        Scale each cell to 10,000 counts before the ``log1p`` that feeds the encoders (also for the
        re-encoded means of the cycle head), so that sequencing depth does not enter the latent. Ignored when
        ``encoder_input="normalized"``, which normalises anyway.
    encoder_input
        What the encoders see (also for the re-encoded means of the cycle head). ``"normalized"`` (default): RNA
        as ``log1p`` of counts per 10,000, ATAC as ``log1p(TF-IDF * 10,000)`` with term frequencies
        ``counts / cell total`` and ``atac_idf`` as the inverse document frequencies, so that neither depth nor a
        few very common features dominate the input. ``"counts"`` (the original): ``log1p`` of the counts.
    atac_idf
        Inverse document frequency of each peak (``n_cells / (1 + cells with the peak open)``), needed by
        ``encoder_input="normalized"``; kept as a buffer, so it is saved with the module. ``None``: all ones.
    library_fill
        Log library sizes ``(rna, atac)`` that stand in for a modality a cell was not measured in. Given, the
        module trains on mosaics: minibatches carry each cell's observed modalities, a paired cell is encoded by
        the joint encoder, a single-modality cell by its modality's encoder, reconstruction terms cover only
        what was measured, and the single-modality terms (and the alignment term) use the paired cells.
        ``None``: every cell is paired.
    alignment_weight
        Weight, on mosaics, of ``KL(q_rna || q_joint) + KL(q_atac || q_joint)`` on the paired cells (the joint
        posterior held fixed in this term), which places the single-modality posteriors where the joint one puts
        the same cell. At 1, ATAC-only cells of snare_cortex sat apart from paired cells of their type; 10 brings
        them in (``docs/mosaic.md``).
    cross_modal_weight
        Weight, on mosaics, of decoding each modality of a paired cell from the other modality's posterior
        (scaled by that modality's reconstruction weight): the prediction single-modality cells receive.
    """

    def __init__(
        self,
        n_input_rna: int,
        n_input_atac: int,
        n_batch: int = 1,
        n_cats_per_cov: list[int] | None = None,
        n_latent: int = 20,
        n_hidden: int = 128,
        n_centroids: int = 1,
        n_heads: int = 8,
        dropout_rate: float = 0.1,
        rna_likelihood: str = "nb",
        atac_likelihood: str = "zip",
        encode_covariates: bool = True,
        rna_weight: float = 1.0,
        atac_weight: float = 1.0,
        joint_atac_weight: float | None = None,
        cluster_weight: float = 0.5,
        joint_kl_weight: float = 0.1,
        cycle_kl_weight: float = 0.1,
        sharpness_weight: float = 50.0,
        balance_weight: float = 50.0,
        balance_target: str = "prior",
        single_modality_weight: float = 0.0,
        normalize_encoder_input: bool = False,
        encoder_input: str = "normalized",
        atac_idf: torch.Tensor | None = None,
        library_fill: tuple[float, float] | None = None,
        alignment_weight: float = 10.0,
        cross_modal_weight: float = 1.0,
    ):
        super().__init__()
        if rna_likelihood not in RNA_LIKELIHOODS:
            raise ValueError(f"rna_likelihood must be one of {RNA_LIKELIHOODS}, got {rna_likelihood!r}.")
        if atac_likelihood not in ATAC_LIKELIHOODS:
            raise ValueError(f"atac_likelihood must be one of {ATAC_LIKELIHOODS}, got {atac_likelihood!r}.")
        if n_hidden % n_heads != 0:
            raise ValueError(
                f"n_hidden ({n_hidden}) must be divisible by n_heads ({n_heads}); e.g. use n_hidden=128, n_heads=8."
            )
        self.n_input_rna, self.n_input_atac = n_input_rna, n_input_atac
        self.n_batch, self.n_latent, self.n_hidden = n_batch, n_latent, n_hidden
        self.n_centroids = n_centroids
        if encoder_input not in ENCODER_INPUTS:
            raise ValueError(f"encoder_input must be one of {ENCODER_INPUTS}, got {encoder_input!r}.")
        if balance_target not in BALANCE_TARGETS:
            raise ValueError(f"balance_target must be one of {BALANCE_TARGETS}, got {balance_target!r}.")
        self.balance_target = balance_target
        self.rna_likelihood, self.atac_likelihood = rna_likelihood, atac_likelihood
        self.latent_distribution = "normal"
        self.normalize_encoder_input = normalize_encoder_input
        self.encoder_input = encoder_input
        if encoder_input == "normalized":
            # only then, so that modules saved before this option existed load their state unchanged
            idf = torch.ones(n_input_atac) if atac_idf is None else torch.as_tensor(atac_idf, dtype=torch.float32)
            if idf.shape != (n_input_atac,):
                raise ValueError(f"atac_idf must have one value per peak ({n_input_atac}), got {tuple(idf.shape)}.")
            self.register_buffer("atac_idf", idf)
        self.weights = {
            "rna": rna_weight,
            "atac": atac_weight,
            "joint_atac": joint_atac_weight,  # None: follow "atac"
            "cluster": cluster_weight,
            "joint_kl": joint_kl_weight,
            "cycle_kl": cycle_kl_weight,
            "sharpness": sharpness_weight,
            "balance": balance_weight,
            "single": single_modality_weight,
            "alignment": alignment_weight,
            "cross": cross_modal_weight,
        }
        self.mosaic = library_fill is not None
        if self.mosaic:  # only then, so that the state of paired-only modules is unchanged
            self.register_buffer("library_fill", torch.as_tensor(library_fill, dtype=torch.float32).reshape(2))

        cat_list = [n_batch, *(n_cats_per_cov or [])]
        encoder_cats = cat_list if encode_covariates else None
        self.rna_encoder = RNAEncoder(n_input_rna, n_hidden, n_latent, encoder_cats, dropout_rate)
        self.atac_encoder = ATACEncoder(n_input_atac, n_hidden, n_latent, n_heads, encoder_cats, dropout_rate)
        self.joint_encoder = JointEncoder(
            n_input_rna, n_input_atac, n_hidden, n_latent, n_heads, encoder_cats, dropout_rate
        )
        self.fusion = PosteriorFusion(n_latent)
        self.prior = GaussianMixturePrior(n_centroids, n_latent)
        self.decoder = TwoChannelDecoder(
            n_latent,
            n_hidden,
            n_input_rna,
            n_input_atac,
            n_heads,
            n_centroids,
            cat_list,
            rna_zero_inflation=LIKELIHOODS[rna_likelihood].zero_inflated,
            atac_zero_inflation=LIKELIHOODS[atac_likelihood].zero_inflated,
        )
        dispersion = {name: LIKELIHOODS[name].dispersion for name in (rna_likelihood, atac_likelihood)}
        self.rna_log_theta = nn.Parameter(torch.randn(n_input_rna)) if dispersion[rna_likelihood] else None
        self.atac_log_theta = nn.Parameter(torch.randn(n_input_atac)) if dispersion[atac_likelihood] else None
        self.register_buffer("gmm_initialized", torch.tensor(False))
        # set by the model when its MuData is minified: encode from the stored joint posteriors, not from counts
        self.minified_data_type: str | None = None

    # ------------------------------------------------------------------ mixture prior
    @torch.no_grad()
    def initialize_gmm(self, means: torch.Tensor, variances: torch.Tensor, weights: torch.Tensor) -> None:
        """Set the mixture prior and switch the module from pretraining to joint training.

        The prior and the decoder's attention module are rebuilt when the number of components changes.
        """
        n_components = means.shape[0]
        device = self.gmm_initialized.device
        if n_components != self.prior.n_components:
            self.prior = GaussianMixturePrior(n_components, self.n_latent).to(device)
            rebuild_cluster_attention(self.decoder, n_components)
            self.n_centroids = n_components
        self.prior.set_parameters(means.to(device), variances.to(device), weights.to(device))
        self.gmm_initialized.fill_(True)

    # ------------------------------------------------------------------ scvi-tools plumbing
    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
        if self.minified_data_type is not None:
            return {
                "qzm": tensors[REGISTRY_KEYS.LATENT_QZM_KEY],
                "qzv": tensors[REGISTRY_KEYS.LATENT_QZV_KEY],
                "observed_lib_size_rna": tensors[REGISTRY_KEYS.OBSERVED_LIB_SIZE],
                "observed_lib_size_atac": tensors[OBSERVED_LIB_SIZE_ATAC],
            }
        return {
            "x_rna": tensors[REGISTRY_KEYS.X_KEY],
            "x_atac": tensors[REGISTRY_KEYS.ATAC_X_KEY],
            "batch_index": tensors[REGISTRY_KEYS.BATCH_KEY],
            "cat_covs": tensors.get(REGISTRY_KEYS.CAT_COVS_KEY),
            "observed": tensors.get(OBSERVED_MODALITIES_KEY) if self.mosaic else None,
        }

    def _get_generative_input(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor],
        transform_batch: int | None = None,
    ) -> dict[str, torch.Tensor | None]:
        batch_index = tensors[REGISTRY_KEYS.BATCH_KEY]
        if transform_batch is not None:
            batch_index = torch.full_like(batch_index, int(transform_batch))
        pretraining = inference_outputs["log_gamma"] is None
        return {
            "z": inference_outputs["z"],
            "library_rna": inference_outputs["library_rna"],
            "library_atac": inference_outputs["library_atac"],
            "log_gamma": inference_outputs["log_gamma"],
            "batch_index": batch_index,
            "cat_covs": tensors.get(REGISTRY_KEYS.CAT_COVS_KEY),
            # pretraining (no responsibilities yet) decodes each single-modality latent too, sharing the output
            # layers; read from the inference outputs, not from the mixture flag, which would wait for the device
            "z_rna": inference_outputs.get("z_rna") if pretraining else None,
            "z_atac": inference_outputs.get("z_atac") if pretraining else None,
        }

    def _encoder_input(
        self, counts: torch.Tensor, library: torch.Tensor | None, modality: str, peaks: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Transform the counts (or decoded means) of one modality into what its encoders see.

        ``peaks`` (ATAC only) names the peak of each of ``counts`` when they are non-zero entries, each with its
        cell's ``library``, instead of a cells x peaks matrix. ``library=None`` says that ``counts`` are already
        divided by their cell's library size (only valid when :attr:`depth_normalized_input`).
        """
        if not self.depth_normalized_input:
            return torch.log1p(counts)
        factor = 1e4  # counts per 10,000, then TF-IDF for the peaks: one product per entry
        if self.encoder_input == "normalized" and modality == "atac":
            factor = factor * (self.atac_idf if peaks is None else self.atac_idf[peaks])
        if library is not None:
            counts = counts / torch.exp(library)
        return torch.log1p(counts * factor)

    @property
    def depth_normalized_input(self) -> bool:
        """Whether the encoders see counts divided by their cell's library size (times 10,000)."""
        return self.encoder_input == "normalized" or self.normalize_encoder_input

    def _atac_encoder_input(self, x_atac: torch.Tensor, library_atac: torch.Tensor) -> torch.Tensor | NonZeroEntries:
        """Transform the ATAC counts for the encoders, keeping only the non-zero entries when they are few (CPU).

        Every encoder input transform maps zero counts to zero, so the encoders' first layers need only the
        weights of the peaks a minibatch holds (see ``scmvp_scvi._sparse_input``).
        """
        entries = non_zero_entries(x_atac)
        if entries is None:
            return self._encoder_input(x_atac, library_atac, "atac")
        values = self._encoder_input(entries.values, library_atac[entries.rows, 0], "atac", peaks=entries.cols)
        return entries._replace(values=values)

    @staticmethod
    def _covariates(batch_index: torch.Tensor, cat_covs: torch.Tensor | None) -> list[torch.Tensor]:
        covariates = [batch_index]
        if cat_covs is not None:
            covariates += list(torch.split(cat_covs, 1, dim=1))
        return covariates

    # ------------------------------------------------------------------ model
    @auto_move_data
    def inference(
        self,
        x_rna: torch.Tensor | None = None,
        x_atac: torch.Tensor | None = None,
        batch_index: torch.Tensor | None = None,
        cat_covs: torch.Tensor | None = None,
        observed: torch.Tensor | None = None,
        use_mean: bool = False,
        single_modalities: bool = True,
        **cached: torch.Tensor,
    ) -> dict[str, torch.Tensor | Normal | None]:
        """Encode a minibatch.

        ``use_mean=True`` decodes from the posterior mean (deterministic outputs). ``single_modalities=False``
        skips the RNA-only and ATAC-only encoders (their outputs are then ``None``); training needs them. On
        minified data the inputs are the stored joint posterior (``qzm``, ``qzv``) and the observed library sizes
        (``observed_lib_size_rna``, ``observed_lib_size_atac``) instead of the counts.

        ``observed`` (mosaics) holds each cell's code of :data:`scmvp_scvi._modalities.KINDS`. Then ``qz`` is each
        cell's posterior: the joint one for paired cells, the single-modality one for the others (the joint
        encoder's own output is ``qz_joint``), a missing modality gets the library size ``library_fill``, and
        ``has_rna`` / ``has_atac`` hold the ``(n, 1)`` masks of the cells measured in each modality.
        """
        if cached:
            return self._cached_inference(**cached, use_mean=use_mean, single_modalities=single_modalities)
        covariates = self._covariates(batch_index, cat_covs)
        # observed library sizes; a cell with no counts gets library 1 instead of log(0)
        library_rna = torch.log(x_rna.sum(-1, keepdim=True).clamp_min(1.0))
        library_atac = torch.log(x_atac.sum(-1, keepdim=True).clamp_min(1.0))
        x_log = self._encoder_input(x_rna, library_rna, "rna")
        y_log = self._atac_encoder_input(x_atac, library_atac)

        # On mosaics every encoder sees every cell of the minibatch, unmeasured all-zero rows included. Encoding
        # each cell only with the encoders of its modalities (so that those rows stay out of batch norm) was
        # measured and is worse on snare_cortex: see the mosaic page of the docs.
        qz = self.joint_encoder(x_log, y_log, *covariates)
        outputs = {"qz_rna": None, "qz_atac": None, "z_rna": None, "z_atac": None}
        has_rna, has_atac = masks(observed)
        if single_modalities or has_rna is not None:
            for name, encoder, data in (("rna", self.rna_encoder, x_log), ("atac", self.atac_encoder, y_log)):
                q = encoder(data, *covariates)
                outputs[f"qz_{name}"], outputs[f"z_{name}"] = q, q.loc if use_mean else q.rsample()
        if has_rna is not None:
            outputs["has_rna"], outputs["has_atac"] = has_rna, has_atac
            # each cell is encoded from what was measured; a missing modality gets a typical library size
            library_rna = torch.where(has_rna, library_rna, self.library_fill[0])
            library_atac = torch.where(has_atac, library_atac, self.library_fill[1])
            q_rna, q_atac, paired = outputs["qz_rna"], outputs["qz_atac"], has_rna & has_atac
            outputs["qz_joint"] = qz
            qz = Normal(
                torch.where(paired, qz.loc, torch.where(has_rna, q_rna.loc, q_atac.loc)),
                torch.where(paired, qz.scale, torch.where(has_rna, q_rna.scale, q_atac.scale)),
            )
        z = qz.loc if use_mean else qz.rsample()
        log_gamma = self.prior.log_responsibilities(z) if bool(self.gmm_initialized) else None
        return {
            "z": z,
            "qz": qz,
            **outputs,
            "library_rna": library_rna,
            "library_atac": library_atac,
            "log_gamma": log_gamma,
        }

    def _cached_inference(
        self,
        qzm: torch.Tensor,
        qzv: torch.Tensor,
        observed_lib_size_rna: torch.Tensor,
        observed_lib_size_atac: torch.Tensor,
        use_mean: bool = False,
        single_modalities: bool = False,
    ) -> dict[str, torch.Tensor | Normal | None]:
        """Inference outputs from a stored joint posterior: the encoders, and so the counts, are not needed."""
        if single_modalities:
            raise ValueError(
                "The RNA-only and ATAC-only posteriors need the counts, which minify_mudata removed; load the model "
                "onto the full MuData for them."
            )
        qz = Normal(qzm, qzv.sqrt())
        z = qz.loc if use_mean else qz.sample()
        return {
            "z": z,
            "qz": qz,
            "qz_rna": None,
            "qz_atac": None,
            "z_rna": None,
            "z_atac": None,
            "library_rna": self._stored_library(observed_lib_size_rna, 0),
            "library_atac": self._stored_library(observed_lib_size_atac, 1),
            "log_gamma": self.prior.log_responsibilities(z) if bool(self.gmm_initialized) else None,
        }

    def _stored_library(self, observed: torch.Tensor, modality: int) -> torch.Tensor:
        """Log library sizes from stored totals, as in the regular inference.

        A cell with no counts gets library 1, or on mosaics the ``library_fill`` of the modality it lacks.
        """
        observed = observed.reshape(-1, 1)
        library = torch.log(observed.clamp_min(1.0))
        return torch.where(observed > 0, library, self.library_fill[modality]) if self.mosaic else library

    def _decode(self, channel: str, z: Latents, gate: Latents, library, covariates) -> list[Distribution]:
        """Observation models of one channel, one per latent when ``z`` and ``gate`` are tuples (else a list of one).

        Tuples share the channel's output layer, evaluated once on their stacked rows.
        """
        decode = self.decoder.rna if channel == "rna" else self.decoder.atac
        scale, zi_logits = decode(z, gate, *covariates)
        log_theta = self.rna_log_theta if channel == "rna" else self.atac_log_theta
        theta = log_theta.exp() if log_theta is not None else None
        likelihood = self.rna_likelihood if channel == "rna" else self.atac_likelihood
        n_parts = 1 if isinstance(z, torch.Tensor) else len(z)
        scales = scale.chunk(n_parts)
        zi_parts = zi_logits.chunk(n_parts) if zi_logits is not None else (None,) * n_parts
        return [
            observation_model(likelihood, None, theta, zi, scale=part, library=library)
            for part, zi in zip(scales, zi_parts, strict=True)
        ]

    @auto_move_data
    def generative(
        self,
        z: torch.Tensor,
        library_rna: torch.Tensor,
        library_atac: torch.Tensor,
        log_gamma: torch.Tensor | None,
        batch_index: torch.Tensor,
        cat_covs: torch.Tensor | None = None,
        modalities: Sequence[str] = ("rna", "atac"),
        z_rna: torch.Tensor | None = None,
        z_atac: torch.Tensor | None = None,
    ) -> dict[str, Distribution | torch.Tensor]:
        """Decode latent ``z`` into the observation models of both modalities (``px_rna``, ``px_atac``).

        Each is a distribution (see ``scmvp_scvi._likelihoods``) with the decoded mean ``mu``, the normalised mean
        ``scale`` (``rho`` for genes, ``alpha`` for peaks), ``log_prob``, ``cell_log_prob``, ``prob_nonzero`` and
        ``denoised``. ``modalities`` limits decoding to the ones an output needs (the peaks cost most). Before
        joint training, ``z_rna`` and ``z_atac`` (the single-modality latents) are decoded into their own modality
        alongside ``z`` (``px_rna_single``, ``px_atac_single``), the terms of pretraining.
        """
        covariates = self._covariates(batch_index, cat_covs)
        gate = self.decoder.gate(None if log_gamma is None else log_gamma.exp(), z.shape[0])
        outputs = {"gate": gate}
        for channel, z_single, library in (("rna", z_rna, library_rna), ("atac", z_atac, library_atac)):
            if channel not in modalities:
                continue
            if z_single is None:
                outputs[f"px_{channel}"] = self._decode(channel, z, gate, library, covariates)[0]
            else:  # pretraining: the single-modality latent decodes with the same neutral gate
                px, px_single = self._decode(channel, (z, z_single), (gate, gate), library, covariates)
                outputs[f"px_{channel}"], outputs[f"px_{channel}_single"] = px, px_single
        return outputs

    @staticmethod
    def _nll(x: torch.Tensor, px: Distribution) -> torch.Tensor:
        """Per-cell negative log-likelihood of counts ``x``."""
        return -px.cell_log_prob(x)

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        kl_weight: float = 1.0,
        cluster_warmup: float = 1.0,
    ) -> LossOutput:
        """Weighted scMVP objective.

        ``reconstruction_loss`` holds the unweighted negative log-likelihoods and ``kl_local`` the prior KL, so
        that scvi-tools' ELBO is a true ELBO; the optimised ``loss`` applies the scMVP weights and adds the
        auxiliary terms, which are reported in ``extra_metrics``. ``kl_weight`` scales the KL terms and
        ``cluster_warmup`` the cluster terms (both ramped up by the training plan).
        """
        x_rna, x_atac = tensors[REGISTRY_KEYS.X_KEY], tensors[REGISTRY_KEYS.ATAC_X_KEY]
        w = self.weights
        has_rna, has_atac = self._observed(tensors)
        paired = None if has_rna is None else has_rna & has_atac
        nll_rna = _only(self._nll(x_rna, generative_outputs["px_rna"]), has_rna)
        nll_atac = _only(self._nll(x_atac, generative_outputs["px_atac"]), has_atac)
        qz_rna, qz_atac = inference_outputs["qz_rna"], inference_outputs["qz_atac"]
        qz_joint = inference_outputs.get("qz_joint", inference_outputs["qz"])
        q_fused = self.fusion(qz_rna, qz_atac)
        kl_joint = _only(kl_divergence(qz_joint, q_fused).sum(-1), paired)
        if bool(self.gmm_initialized):
            total, kl_prior, extra = self._joint_terms(tensors, inference_outputs, generative_outputs, q_fused, paired)
            total = cluster_warmup * total
            atac_weight = w["atac"] if w["joint_atac"] is None else w["joint_atac"]
        else:
            total, kl_prior, extra = self._pretraining_terms(tensors, inference_outputs, generative_outputs, paired)
            atac_weight = w["atac"]
        if paired is not None:
            # the single-modality posteriors follow the joint one (not the reverse), and the KL is taken from
            # them, so that a broad single-modality posterior cannot absorb an offset of its mean
            target = Normal(qz_joint.loc.detach(), qz_joint.scale.detach())
            kl_align = kl_divergence(qz_rna, target).sum(-1) + kl_divergence(qz_atac, target).sum(-1)
            extra["kl_alignment"] = _only(kl_align, paired)
            extra["_kl_aux"] = extra["_kl_aux"] + w["alignment"] * extra["kl_alignment"]
            if w["cross"] > 0:
                cross_total, cross_extra = self._cross_modal_terms(tensors, inference_outputs, paired)
                total = total + w["cross"] * cross_total
                extra.update(cross_extra)
        kl_total = kl_prior + extra.pop("_kl_aux") + w["joint_kl"] * kl_joint
        loss = w["rna"] * nll_rna + atac_weight * nll_atac + total + kl_weight * kl_total
        metrics = {
            "nll_rna": nll_rna.mean(),
            "nll_atac": nll_atac.mean(),
            "kl_prior": kl_prior.mean(),
            "kl_joint": kl_joint.mean(),
            **{k: v.mean() for k, v in extra.items()},
        }
        if not torch.isfinite(loss).all():
            self._raise_non_finite(metrics)
        return LossOutput(
            loss=loss.mean(),
            reconstruction_loss={"rna": nll_rna, "atac": nll_atac},
            kl_local={"kl_prior": kl_prior},
            extra_metrics={k: v.detach() for k, v in metrics.items()},
        )

    def _observed(self, tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(has_rna, has_atac)`` masks of a minibatch of a mosaic; ``(None, None)`` when every cell is paired."""
        return masks(tensors.get(OBSERVED_MODALITIES_KEY) if self.mosaic else None)

    def _raise_non_finite(self, metrics: dict[str, torch.Tensor]) -> None:
        """Stop with an error that names the loss terms that became NaN or infinite, and what to try."""
        phase = "joint training" if bool(self.gmm_initialized) else "pretraining"
        bad = [name for name, value in metrics.items() if not torch.isfinite(value).all()]
        if len(bad) == len(metrics):
            cause = (
                "every loss term is NaN or infinite, so the weights themselves diverged. Lower the learning rate "
                "(train(lr=...), default 5e-3) or raise Adam's eps (train(eps=...))"
            )
        else:
            cause = (
                f"the terms {bad} became NaN or infinite. Lower the learning rate (train(lr=...)); if the "
                "reconstruction terms (nll_*) are the bad ones, check the counts of that modality or try another "
                "likelihood (rna_likelihood / atac_likelihood)"
            )
        raise FloatingPointError(f"SCMVP stopped during {phase}: {cause}.")

    def _pretraining_terms(self, tensors, inference_outputs, generative_outputs, paired=None):
        """Single-modality VAEs through the shared decoder channels, standard normal priors.

        On mosaics they cover the paired cells only: a single-modality cell's own posterior is already ``qz``.
        """
        # decoded by ``generative``, beside the joint latent
        px_rna, px_atac = generative_outputs["px_rna_single"], generative_outputs["px_atac_single"]
        nll_rna_single = _only(self._nll(tensors[REGISTRY_KEYS.X_KEY], px_rna), paired)
        nll_atac_single = _only(self._nll(tensors[REGISTRY_KEYS.ATAC_X_KEY], px_atac), paired)
        kl_prior = _kl_standard_normal(inference_outputs["qz"])
        kl_single = _kl_standard_normal(inference_outputs["qz_rna"]) + _kl_standard_normal(inference_outputs["qz_atac"])
        kl_single = _only(kl_single, paired)
        total = self.weights["rna"] * nll_rna_single + self.weights["atac"] * nll_atac_single
        extra = {"nll_rna_single": nll_rna_single, "nll_atac_single": nll_atac_single, "_kl_aux": kl_single}
        return total, kl_prior, extra

    def _joint_terms(self, tensors, inference_outputs, generative_outputs, q_fused, paired=None):
        """Mixture-prior KL, cycle-consistency head and cluster terms (cycle KL on paired cells only)."""
        w = self.weights
        covariates = self._covariates(tensors[REGISTRY_KEYS.BATCH_KEY], tensors.get(REGISTRY_KEYS.CAT_COVS_KEY))
        log_gamma = inference_outputs["log_gamma"]
        kl_prior = self.prior.kl_divergence(inference_outputs["qz"], log_gamma)

        # cycle: re-encode the decoded means with the single-modality encoders
        def decoded(modality: str) -> tuple[torch.Tensor, torch.Tensor | None]:
            px = generative_outputs[f"px_{modality}"]
            if self.depth_normalized_input:  # the decoded mean over its library is the decoder's normalised mean
                return px.scale, None
            return px.mu, inference_outputs[f"library_{modality}"]

        # the re-encoded means must not enter the statistics the encoders normalise data with at inference
        with running_statistics_kept(self.rna_encoder, self.atac_encoder):
            q_cycle = self.fusion(
                self.rna_encoder(self._encoder_input(*decoded("rna"), "rna"), *covariates),
                self.atac_encoder(self._encoder_input(*decoded("atac"), "atac"), *covariates),
            )
        log_gamma_cycle = self.prior.log_responsibilities(q_cycle.rsample())
        kl_cycle = _only(kl_divergence(q_fused, q_cycle).sum(-1), paired)

        log_pi = torch.log_softmax(self.prior.logits, -1).detach() if self.balance_target == "prior" else None
        consistency, sharpness, negative_entropy = self.cluster_terms(log_gamma, log_gamma_cycle, log_pi)
        cluster = consistency + w["sharpness"] * sharpness + w["balance"] * negative_entropy
        extra = {
            "kl_cycle": kl_cycle,
            "cluster_consistency": consistency,
            "cluster_sharpness": sharpness,
            "cluster_balance": negative_entropy,
            "_kl_aux": w["cycle_kl"] * kl_cycle,
        }
        total = w["cluster"] * cluster
        if w["single"] > 0:
            single_total, single_kl, single_extra = self._single_modality_terms(
                tensors, inference_outputs, covariates, paired
            )
            total = total + w["single"] * single_total
            extra["_kl_aux"] = extra["_kl_aux"] + w["single"] * single_kl
            extra.update(single_extra)
        return total, kl_prior, extra

    def _single_modality_terms(self, tensors, inference_outputs, covariates, paired=None):
        """RNA-only and ATAC-only VAEs under the (fixed in these terms) mixture prior, each decoding its modality."""
        total, kl, extra = 0.0, 0.0, {}
        for modality, x_key in (("rna", REGISTRY_KEYS.X_KEY), ("atac", REGISTRY_KEYS.ATAC_X_KEY)):
            q, z = inference_outputs[f"qz_{modality}"], inference_outputs[f"z_{modality}"]
            # the mixture is shaped by the joint posteriors only; the single-modality ones are fitted to it
            log_gamma = self.prior.log_responsibilities(z, detach=True)
            gate = self.decoder.gate(log_gamma.exp(), z.shape[0])
            params = self._decode(modality, z, gate, inference_outputs[f"library_{modality}"], covariates)[0]
            nll = _only(self._nll(tensors[x_key], params), paired)
            total = total + self.weights[modality] * nll
            kl = kl + _only(self.prior.kl_divergence(q, log_gamma, detach=True), paired)
            extra[f"nll_{modality}_single"] = nll
        return total, kl, extra

    def _cross_modal_terms(self, tensors, inference_outputs, paired):
        """On the paired cells of a mosaic, decode each modality from the other modality's posterior.

        This is the prediction a single-modality cell gets, so it is trained where the answer is known.
        """
        covariates = self._covariates(tensors[REGISTRY_KEYS.BATCH_KEY], tensors.get(REGISTRY_KEYS.CAT_COVS_KEY))
        total, extra = 0.0, {}
        for source, target, x_key in (("rna", "atac", REGISTRY_KEYS.ATAC_X_KEY), ("atac", "rna", REGISTRY_KEYS.X_KEY)):
            z = inference_outputs[f"z_{source}"]
            mixture = bool(self.gmm_initialized)
            gamma = self.prior.log_responsibilities(z, detach=True).exp() if mixture else None
            gate = self.decoder.gate(gamma, z.shape[0])
            px = self._decode(target, z, gate, inference_outputs[f"library_{target}"], covariates)[0]
            nll = _only(self._nll(tensors[x_key], px), paired)
            total = total + self.weights[target] * nll
            extra[f"nll_{target}_from_{source}"] = nll
        return total, extra

    @staticmethod
    def cluster_terms(
        log_gamma: torch.Tensor, log_gamma_cycle: torch.Tensor, log_target: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-cell cluster terms to minimise.

        Returns
        -------
        consistency
            Cross-entropy ``-sum_k gamma_k log gamma'_k`` between the responsibilities of the data and of its
            re-encoded reconstruction.
        sharpness
            ``-sum_k gamma_k^2``: lower for confident assignments.
        negative_entropy
            ``sum_k pbar_k log pbar_k`` of the minibatch cluster marginal ``pbar`` (the same for every cell):
            lower when cells spread over the clusters. With ``log_target`` (log cluster fractions to aim at),
            ``sum_k pbar_k (log pbar_k - log_target_k)``: lower when the marginal matches the target.
        """
        gamma = log_gamma.exp()
        consistency = -(gamma * log_gamma_cycle).sum(-1)
        sharpness = -(gamma**2).sum(-1)
        marginal = gamma.mean(0)
        log_ratio = torch.log(marginal + 1e-10) - (0.0 if log_target is None else log_target)
        negative_entropy = (marginal * log_ratio).sum().expand_as(sharpness)
        return consistency, sharpness, negative_entropy

    @torch.inference_mode()
    def marginal_ll(
        self, tensors: dict[str, torch.Tensor], n_mc_samples: int, return_mean: bool = False
    ) -> torch.Tensor:
        """Importance-sampled ``log p(x_rna, x_atac)`` of each cell given its observed library sizes.

        The joint posterior is the proposal; the prior is the mixture after joint training, a standard normal
        before. ``return_mean`` averages over the cells of the minibatch.
        """
        if n_mc_samples < 1:
            raise ValueError(f"n_mc_samples must be at least 1, got {n_mc_samples}.")
        inference_outputs = self.inference(**self._get_inference_input(tensors), single_modalities=False)
        generative_inputs = self._get_generative_input(tensors, inference_outputs)
        qz, mixture = inference_outputs["qz"], bool(self.gmm_initialized)
        has_rna, has_atac = self._observed(tensors)
        log_weights = []
        for _ in range(n_mc_samples):
            z = qz.sample()
            log_gamma = self.prior.log_responsibilities(z) if mixture else None
            px = self.generative(**{**generative_inputs, "z": z, "log_gamma": log_gamma})
            log_px = -_only(self._nll(tensors[REGISTRY_KEYS.X_KEY], px["px_rna"]), has_rna)
            log_px = log_px - _only(self._nll(tensors[REGISTRY_KEYS.ATAC_X_KEY], px["px_atac"]), has_atac)
            log_pz = self.prior.log_prob(z) if mixture else Normal(0.0, 1.0).log_prob(z).sum(-1)
            log_weights.append(log_px + log_pz - qz.log_prob(z).sum(-1))
        log_likelihood = torch.logsumexp(torch.stack(log_weights), dim=0) - math.log(n_mc_samples)
        return log_likelihood.mean() if return_mean else log_likelihood

    @torch.inference_mode()
    def sample(self, tensors: dict[str, torch.Tensor], n_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior predictive samples of both modalities, shapes ``(n_samples, n_obs, n_features)``."""
        _, generative_outputs = self.forward(tensors, compute_loss=False)
        shape = torch.Size([n_samples])
        return generative_outputs["px_rna"].sample(shape), generative_outputs["px_atac"].sample(shape)
