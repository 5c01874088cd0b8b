"""Data sets and generators."""

from ._synthetic import synthetic_paired

__all__ = ["synthetic_paired"]
