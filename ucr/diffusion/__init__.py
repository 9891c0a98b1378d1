"""Diffusion maths: Iterative alpha-(de)Blending (IADB) with x0-prediction; see :mod:`ucr.diffusion.iadb`."""

from __future__ import annotations

from ucr.diffusion.iadb import (Denoiser, append_dims, blend, hold_known, sample, sample_alpha, training_inputs,
                                x0_loss)

__all__ = ["Denoiser", "append_dims", "blend", "hold_known", "sample", "sample_alpha", "training_inputs", "x0_loss"]
