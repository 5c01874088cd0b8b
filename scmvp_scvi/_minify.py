"""Minified data: keep each cell's joint posterior and library sizes, drop the counts."""

from __future__ import annotations

import numpy as np
from mudata import MuData
from scvi import REGISTRY_KEYS
from scvi.data import fields
from scvi.model.base import BaseMinifiedModeModelClass, BaseModelClass, BaseMudataMinifiedModeModelClass
from scvi.model.utils import get_minified_mudata

from ._module import OBSERVED_LIB_SIZE_ATAC

# the minified-data type SCMVP supports, and the uns key where scvi-tools records it in a minified MuData (the
# value of scvi-tools' own constant, tested against it, so that no private module is imported)
LATENT_POSTERIOR = "latent_posterior_parameters"
MINIFY_TYPE_UNS_KEY = "_scvi_adata_minify_type"


def minified_type(mdata: MuData) -> str | None:
    """Return the minified-data type of ``mdata``, ``None`` for full data."""
    return mdata.uns.get(MINIFY_TYPE_UNS_KEY)


class MinifiedMuDataMixin(BaseMinifiedModeModelClass, BaseMudataMinifiedModeModelClass):
    """``minify_mudata`` for SCMVP: outputs from the stored joint posterior, without the counts.

    scvi-tools stores one library size per cell; SCMVP decodes each modality with its own, so the ATAC library
    sizes are stored too.
    """

    _LATENT_QZM_KEY = "scmvp_latent_qzm"
    _LATENT_QZV_KEY = "scmvp_latent_qzv"
    _OBSERVED_LIB_SIZE_KEY = "scmvp_observed_lib_size_rna"
    _OBSERVED_LIB_SIZE_ATAC_KEY = "scmvp_observed_lib_size_atac"

    def minify_mudata(
        self,
        minified_data_type: str = LATENT_POSTERIOR,
        use_latent_qzm_key: str | None = None,
        use_latent_qzv_key: str | None = None,
    ) -> None:
        """Replace the model's MuData by a minified copy: joint posteriors and library sizes, no counts.

        Every output that needs only the joint latent then works without the counts: the latent representation,
        the mixture clusters, imputation, normalised expression and accessibility, differential expression and
        accessibility (without the observed statistics, which need the counts).
        Training, the single-modality latents and the likelihoods (ELBO, marginal likelihood, reconstruction
        error) need the counts: load the model onto the full MuData for those. The MuData passed at setup is not
        changed; the minified copy is ``model.adata``.

        Parameters
        ----------
        minified_data_type
            Only ``"latent_posterior_parameters"``: the counts are dropped. (To keep the counts, keep the full
            MuData.)
        use_latent_qzm_key, use_latent_qzv_key
            Keys of ``adata.obsm`` holding each cell's joint posterior mean and variance, e.g. from
            ``get_latent_representation(return_dist=True)``; default: computed now.
        """
        if minified_data_type != LATENT_POSTERIOR:
            raise NotImplementedError(
                f"SCMVP minifies to {LATENT_POSTERIOR!r} only, got {minified_data_type!r}; to keep the counts, keep "
                "the full MuData."
            )
        if self.minified_data_type is not None:
            raise ValueError("The model's MuData is already minified.")
        if (use_latent_qzm_key is None) != (use_latent_qzv_key is None):
            raise ValueError("Pass both use_latent_qzm_key and use_latent_qzv_key, or neither.")
        self._check_if_trained(warn=False)
        if use_latent_qzm_key is None:
            qzm, qzv = self.get_latent_representation(return_dist=True, key_added=None)
        else:
            qzm, qzv = (self._stored_posterior(key) for key in (use_latent_qzm_key, use_latent_qzv_key))
        libraries = {
            self._OBSERVED_LIB_SIZE_KEY: self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY),
            self._OBSERVED_LIB_SIZE_ATAC_KEY: self.adata_manager.get_from_registry(REGISTRY_KEYS.ATAC_X_KEY),
        }
        mini = get_minified_mudata(self.adata_manager, keep_count_data=False)
        mini.uns.pop("_scvi_uuid", None)  # a new object for scvi-tools' manager store
        mini.uns[MINIFY_TYPE_UNS_KEY] = minified_data_type
        mini.obsm[self._LATENT_QZM_KEY] = np.asarray(qzm, dtype=np.float32)
        mini.obsm[self._LATENT_QZV_KEY] = np.asarray(qzv, dtype=np.float32)
        for key, counts in libraries.items():
            mini.obs[key] = np.asarray(counts.sum(axis=1), dtype=np.float32).ravel()
        self._update_mudata_and_manager_post_minification(mini, minified_data_type)
        self.module.minified_data_type = minified_data_type

    @property
    def summary_string(self) -> str:
        """Summary of the model, saying whether its MuData is minified (once: both base classes add the line)."""
        minified = self.minified_data_type is not None
        return f"{BaseModelClass.summary_string.fget(self)}\nModel's adata is minified?: {minified}"

    def minify_adata(self, *args, **kwargs) -> None:
        """Not supported: SCMVP's data is a MuData; use :meth:`minify_mudata`."""
        raise NotImplementedError("SCMVP's data is a MuData; use model.minify_mudata().")

    def _stored_posterior(self, key: str) -> np.ndarray:
        stored = self.adata.obsm.get(key)
        expected = (self.adata.n_obs, self.module.n_latent)
        if stored is None or np.shape(stored) != expected:
            found = "absent" if stored is None else f"of shape {np.shape(stored)}"
            raise ValueError(
                f"adata.obsm[{key!r}] is {found}; it must hold each cell's joint posterior, shape {expected} (from "
                "model.get_latent_representation(return_dist=True))."
            )
        return np.asarray(stored)

    @classmethod
    def _get_fields_for_mudata_minification(cls, minified_data_type: str) -> list:
        return [
            *super()._get_fields_for_mudata_minification(minified_data_type),
            fields.NumericalObsField(OBSERVED_LIB_SIZE_ATAC, cls._OBSERVED_LIB_SIZE_ATAC_KEY),
        ]

    def _require_counts(self, what: str) -> None:
        """Stop before ``what`` when the counts were removed by :meth:`minify_mudata`."""
        if self.minified_data_type is not None:
            raise ValueError(
                f"{what} needs the counts, which minify_mudata removed; load the model onto the full MuData "
                "(SCMVP.load(path, adata=mdata)) for it."
            )
