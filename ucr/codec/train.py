"""Train a small EnCodec here (``ucr codec train``): transformers' ``EncodecModel`` architecture, 24 kHz mono, 75 Hz
frames, continuous latents (the encoder output; the residual VQ is not trained), on a dataset's mixtures.

The trained weights are exported with ``save_pretrained`` (safetensors + config.json), so that
``codec.name: encodec``, ``codec.weights: DIR``, ``codec.latent_kind: continuous`` loads them through the very loader
that serves Meta's weights (:func:`ucr.codec.encodec.load_encodec_model`).

Training reuses the project's loop (:class:`ucr.train.loop.Trainer`: AdamW, warm-up, clipping, EMA, checkpoints in
the run folder, exact resume, progress): the model is :class:`CodecAutoencoder`, whose forward returns the
per-example loss, and a batch is ``[B, 1, L]`` random excerpts of the training mixtures, drawn from ``(seed, step,
rank)``. Loss: the codec table's multi-resolution STFT distance (spectral convergence + log magnitude,
:func:`ucr.codec.evaluate.multi_resolution_stft_distance`) plus
``codec.train_waveform_weight`` x L1 on the waveform (the STFT terms ignore phase; the L1 term ties it down), both
on the audio x ``codec.train_input_gain`` (see :class:`CodecAutoencoder`; the export folds the gain into the weights,
so the saved model takes audio at its own level).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ucr import audio, storage
from ucr.codec.evaluate import multi_resolution_stft_distance

RUN_EXPORT_FOLDER = "encodec"  # RUN/encodec/: the save_pretrained folder codec.weights points at


def small_encodec_config(codec_config):
    """The ``EncodecConfig`` of a codec trained here, from ``codec.train_*`` (24 kHz mono, hop 320 = 75 Hz)."""
    from transformers import EncodecConfig

    return EncodecConfig(sampling_rate=24000, audio_channels=1, normalize=False,
                         num_filters=codec_config.train_filters, num_lstm_layers=codec_config.train_lstm_layers,
                         hidden_size=codec_config.train_latent_channels, upsampling_ratios=[8, 5, 4, 2])


class CodecAutoencoder(nn.Module):
    """An ``EncodecModel`` trained as a continuous autoencoder: ``forward(wave [B, 1, L])`` -> loss ``[B]``.

    The model works on the audio x ``input_gain`` (``codec.train_input_gain``): mixtures sit at an RMS of ~0.05, where
    the convolutions' initial biases swamp the signal and the encoder's output hardly depends on its input (the
    training then settles on one input-independent output). :meth:`encode` / :meth:`decode` take and give audio at
    its own level; :func:`fold_input_gain` bakes the gain into the exported weights."""

    def __init__(self, model, waveform_weight: float = 1.0, input_gain: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.waveform_weight = float(waveform_weight)
        self.input_gain = float(input_gain)

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, 1, L]`` audio -> ``[B, C, T]`` latent (T = ceil(L / 320))."""
        return self.model.encoder(wave * self.input_gain)

    def decode(self, latent: torch.Tensor, length: int) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, 1, length]`` audio at its own level."""
        return self.model.decoder(latent)[..., :length] / self.input_gain

    def reconstruct(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, 1, L]`` -> ``[B, 1, L]`` through the encoder and the decoder (no quantiser)."""
        return self.decode(self.encode(wave), wave.shape[-1])

    def forward(self, wave: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        assert wave.dim() == 3 and wave.shape[1] == 1, f"expected [B, 1, L], got {list(wave.shape)}"
        # the loss is taken at the training level (x input_gain), where the waveform L1 is not ~20x smaller than the
        # (level-free) STFT terms
        estimate = self.reconstruct(wave)[:, 0] * self.input_gain  # [B, L]
        reference = wave[:, 0] * self.input_gain  # [B, L]
        waveform = (estimate - reference).abs().mean(dim=1)  # [B]
        return multi_resolution_stft_distance(estimate, reference) + self.waveform_weight * waveform


def load_mixtures(root: str, split: str, layout: str, sources: tuple[str, ...], sample_rate: int,
                  min_seconds: float) -> list[np.ndarray]:
    """The mixture (sum of the chosen sources) of every track of a split that is at least ``min_seconds`` long:
    a list of float32 ``[L_i]``. Raises when none is."""
    from ucr.data.readers import mix_sources, usable_tracks

    mixtures = []
    for track in usable_tracks(root, split, layout, sources, sample_rate):
        mixture = mix_sources(track.sources).astype(np.float32)
        if mixture.shape[-1] >= min_seconds * sample_rate:
            mixtures.append(mixture)
    if not mixtures:
        raise ValueError(f"no track of {root}/{split} with {list(sources)} is at least {min_seconds:g} s long: "
                         f"render or point at a dataset with longer tracks, or lower codec.train_segment_seconds")
    return mixtures


def excerpt_batch(mixtures: list[np.ndarray], batch: int, length: int, seed: int, min_rms: float = 0.0,
                  max_tries: int = 1000) -> torch.Tensor:
    """``batch`` excerpts of ``length`` samples, each from a random track at a random offset: ``[B, 1, L]``.
    A pure function of ``seed``. An excerpt whose RMS is below ``min_rms`` (``data.silence_rms``) is drawn again:
    the loss's spectral convergence divides by the reference's norm, so one silent excerpt (a track's final rest)
    sends it to ~1e9 and the codec diverges. Raises when ``max_tries`` draws in a row are all silent."""
    rng = np.random.default_rng(seed)
    out = np.empty((batch, 1, length), dtype=np.float32)
    for i in range(batch):
        for _ in range(max_tries):
            wave = mixtures[int(rng.integers(0, len(mixtures)))]
            start = int(rng.integers(0, wave.shape[-1] - length + 1))
            excerpt = wave[start:start + length]
            if min_rms <= 0.0 or audio.rms(excerpt) >= min_rms:
                break
        else:
            raise ValueError(f"{max_tries} random excerpts of {length} samples in a row were all quieter than RMS "
                             f"{min_rms:g} (data.silence_rms): is the training audio silent? Check the dataset, "
                             f"or lower data.silence_rms")
        out[i, 0] = excerpt
    return torch.from_numpy(out)


def build_codec_trainer(config, data_uri: str, run_uri: str, device=None, rank: int = 0, world_size: int = 1,
                        hooks=None, progress: bool = True, wrap=None):
    """A :class:`ucr.train.loop.Trainer` for a codec of ``config.codec.train_*`` on the train split of the audio
    dataset ``data_uri`` (``config.data.layout`` / ``sources``), with ``config.train`` (steps, lr, batch, EMA,
    checkpoints, seed). Checkpoints (kind ``codec``) go to ``run_uri``."""
    from transformers import EncodecModel

    from ucr.device import resolve_device
    from ucr.train.loop import Trainer, step_seed

    device = device or resolve_device(config.train.device)
    length = int(round(config.codec.train_segment_seconds * 24000))
    mixtures = load_mixtures(data_uri, "train", config.data.layout, tuple(config.data.sources), 24000,
                             config.codec.train_segment_seconds)
    torch.manual_seed(config.train.seed)  # the initial weights
    model = CodecAutoencoder(EncodecModel(small_encodec_config(config.codec)), config.codec.train_waveform_weight,
                             config.codec.train_input_gain).to(device)
    if wrap is not None:
        model = wrap(model)
    per_rank = max(1, config.train.batch_size // world_size)

    def batch_fn(step: int) -> torch.Tensor:
        return excerpt_batch(mixtures, per_rank, length, step_seed(config.train.seed, step, rank) % 2**32,
                             min_rms=config.data.silence_rms)

    extra = {"kind": "codec", "config": config.to_dict(), "codec": {"name": "encodec", "trained_here": True,
                                                                     "input_gain": config.codec.train_input_gain},
             "data": storage.absolute(data_uri)}
    return Trainer(model, batch_fn, config.train, run_uri, extra, device=device, rank=rank, world_size=world_size,
                   hooks=hooks, progress=progress)


def export_pretrained(checkpoint_uri: str, out_dir: str, use_ema: bool = True) -> str:
    """Write a codec checkpoint's weights (EMA when present) as a ``save_pretrained`` folder (local ``out_dir``, or
    an ``s3://`` URI it is uploaded to) that ``codec.weights`` loads. Returns ``out_dir``."""
    import tempfile

    from transformers import EncodecModel

    from ucr import checkpoint as ckpt
    from ucr.config import ExperimentConfig

    payload = ckpt.load(checkpoint_uri)
    if payload["kind"] != "codec":
        raise ValueError(f"{checkpoint_uri} is a {payload['kind']} checkpoint, not a codec one (from `ucr codec "
                         f"train`)")
    config = ExperimentConfig.from_dict(payload["config"])
    autoencoder = CodecAutoencoder(EncodecModel(small_encodec_config(config.codec)))
    autoencoder.load_state_dict(ckpt.inference_weights(payload, use_ema))
    fold_input_gain(autoencoder.model, float(payload.get("codec", {}).get("input_gain", 1.0)))
    if not storage.is_remote(out_dir):
        autoencoder.model.save_pretrained(out_dir, safe_serialization=True)
        return out_dir
    with tempfile.TemporaryDirectory() as folder:
        autoencoder.model.save_pretrained(folder, safe_serialization=True)
        for path in sorted(Path(folder).iterdir()):
            storage.write_bytes(storage.join(out_dir, path.name), path.read_bytes())
    return out_dir


def fold_input_gain(model, gain: float) -> None:
    """Make ``model`` (an ``EncodecModel`` trained on audio x ``gain``) take and return audio at its own level, in
    place: the first encoder convolution's weight x ``gain``, the last decoder convolution's weight and bias /
    ``gain``. Exact: both convolutions are linear (reflect padding included) and nothing else is touched."""
    if gain == 1.0:
        return
    first, last = model.encoder.layers[0].conv, model.decoder.layers[-1].conv
    with torch.no_grad():
        _scale_conv_weight(first, gain)
        _scale_conv_weight(last, 1.0 / gain)
        last.bias.mul_(1.0 / gain)


def _scale_conv_weight(conv: nn.Conv1d, factor: float) -> None:
    """Multiply a (possibly weight-normed) convolution's effective weight by ``factor`` (> 0)."""
    parametrizations = getattr(conv, "parametrizations", None)
    if parametrizations is not None and "weight" in parametrizations:
        parametrizations.weight.original0.mul_(factor)  # weight = g * v / ||v||: scale the magnitude g
    elif hasattr(conv, "weight_g"):
        conv.weight_g.mul_(factor)
    else:
        conv.weight.mul_(factor)
