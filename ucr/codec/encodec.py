"""Pretrained EnCodec (Défossez et al. 2022) through the maintained ``transformers`` implementation.

Latent kinds: ``quantized`` — encode, quantise with the residual VQ at ``bandwidth`` kbps, dequantise back to the
continuous [C=128, T] vectors (the paper's choice, 24 kbps = 32 codebooks); ``continuous`` — the encoder output.

Weights come from a hub id (``facebook/encodec_24khz``), a local folder (``save_pretrained`` layout), an ``s3://``
copy of such a folder, the Hugging Face cache, or ``"random"`` (a randomly initialised full-size model: for speed
measurements and tests only). When none is reachable the loader fails within seconds and says how to provide them.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from ucr import storage
from ucr.codec.base import LatentCodec

HUB_TIMEOUT_SECONDS = 3.0


class WeightsNotFoundError(ValueError):
    """Codec weights could not be found; the message says how to provide them."""


def _missing_weights_message(source: str, reason: str) -> str:
    folder = source.rsplit("/", 1)[-1]
    return (
        f"EnCodec weights {source!r} are not available here ({reason}).\n"
        f"Provide them in one of these ways:\n"
        f"  1. On a machine with internet:  hf download {source} --local-dir {folder}\n"
        f"     copy the folder here and point codec.weights at it (--set codec.weights=/path/to/{folder})\n"
        f"  2. Upload that folder to object storage and set  --set codec.weights=s3://BUCKET/{folder}\n"
        f"  3. Fill the Hugging Face cache (HF_HOME) on this machine and run with HF_HUB_OFFLINE=1\n"
        f"  4. Or use the exact MDCT codec, which needs no weights:  --set codec.name=mdct  (ucr codec roundtrip: "
        f"--codec mdct)"
    )


def _hub_reachable(timeout: float = HUB_TIMEOUT_SECONDS) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host, port = parsed.hostname or "huggingface.co", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def load_encodec_model(source: str):
    """Return a frozen ``transformers.EncodecModel`` from ``source`` (see module docstring), in eval mode."""
    from transformers import EncodecConfig, EncodecModel  # heavy import (~2 s): only when EnCodec is used
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if source == "random":
        model = random_encodec_model(EncodecConfig())
    elif source.startswith("s3://"):
        if not storage.exists(storage.join(source, "config.json")):
            raise WeightsNotFoundError(_missing_weights_message(source, f"no config.json under {source}"))
        model = EncodecModel.from_pretrained(storage.download_folder(source))
    elif Path(source).expanduser().exists():
        folder = Path(source).expanduser()
        if not (folder / "config.json").exists():
            raise WeightsNotFoundError(_missing_weights_message(
                source, f"{folder} has no config.json (expected a save_pretrained folder)"))
        model = EncodecModel.from_pretrained(str(folder))
    else:
        model = _load_from_hub(EncodecModel, source)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def random_encodec_model(config=None, seed: int = 0):
    """A randomly initialised EnCodec (full 24 kHz size by default) with random codebooks, for tests and timing.

    ``transformers`` leaves the RVQ codebooks at zero until weights are loaded; they are filled here so quantized
    latents are not all zero.
    """
    from transformers import EncodecConfig, EncodecModel

    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = EncodecModel(config or EncodecConfig())
        with torch.no_grad():
            for layer in model.quantizer.layers:
                layer.codebook.embed.normal_()
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()


def _load_from_hub(model_class, hub_id: str):
    try:  # the local Hugging Face cache first: no network at all
        return model_class.from_pretrained(hub_id, local_files_only=True)
    except OSError:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise WeightsNotFoundError(_missing_weights_message(hub_id, "not in the Hugging Face cache and "
                                                                    "HF_HUB_OFFLINE is set"))
    if not _hub_reachable():
        raise WeightsNotFoundError(_missing_weights_message(
            hub_id, f"not in the Hugging Face cache, and the hub did not answer (waited at most "
                    f"{HUB_TIMEOUT_SECONDS:.0f} s)"))
    try:
        return model_class.from_pretrained(hub_id)
    except OSError as err:
        raise WeightsNotFoundError(_missing_weights_message(hub_id, f"download failed: {err}")) from None


def _weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


class EncodecCodec(LatentCodec):
    """EnCodec as a :class:`LatentCodec`. ``model`` is a ``transformers.EncodecModel`` (mono)."""

    def __init__(self, model, latent_kind: str = "quantized", bandwidth: float = 24.0,
                 segment_seconds: float = 20.0, context_seconds: float = 1.0, name: str = "encodec") -> None:
        config = model.config
        if config.audio_channels != 1:
            raise ValueError(f"only mono EnCodec models are supported; {name} has {config.audio_channels} channels")
        if config.normalize:
            raise ValueError(f"EnCodec models with input normalisation (e.g. the 48 kHz one) are not supported: {name}")
        if latent_kind not in ("quantized", "continuous"):
            raise ValueError(f"latent_kind must be 'quantized' or 'continuous', got {latent_kind!r}")
        if latent_kind == "quantized" and bandwidth not in tuple(config.target_bandwidths):
            raise ValueError(f"bandwidth {bandwidth} kbps is not one of this model's {list(config.target_bandwidths)}")
        self.model = model
        self.name = name
        self.latent_kind = latent_kind
        self.bandwidth = float(bandwidth)
        self.sample_rate = int(config.sampling_rate)
        self.hop_length = int(torch.tensor(config.upsampling_ratios).prod())
        self.channels = int(config.hidden_size)
        self.segment_frames = max(1, round(segment_seconds * self.frame_rate))
        self.context_frames = round(context_seconds * self.frame_rate)
        self._digest = _weights_digest(model)

    @classmethod
    def from_source(cls, source: str, **settings) -> "EncodecCodec":
        return cls(load_encodec_model(source), name=source, **settings)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def fingerprint(self) -> str:
        kind = f"q{self.bandwidth:g}kbps" if self.latent_kind == "quantized" else "continuous"
        return f"encodec-sr{self.sample_rate}-w{self._digest}-{kind}"

    def to(self, device: torch.device | str) -> "EncodecCodec":
        self.model.to(device)
        return self

    def _segments(self, frames: int):
        """Yield (start, stop, context_start, context_stop) in frames; one segment when it all fits."""
        for start in range(0, frames, self.segment_frames):
            stop = min(frames, start + self.segment_frames)
            yield start, stop, max(0, start - self.context_frames), min(frames, stop + self.context_frames)

    def _encode_once(self, wave: torch.Tensor) -> torch.Tensor:
        embeddings = self.model.encoder(wave)  # [B, C, T]
        if self.latent_kind == "continuous":
            return embeddings
        codes = self.model.quantizer.encode(embeddings, self.bandwidth)  # [n_q, B, T]
        return self.model.quantizer.decode(codes)  # [B, C, T]

    def _encode(self, wave: torch.Tensor) -> torch.Tensor:
        wave = wave.to(self.device)
        hop = self.hop_length
        frames = wave.shape[-1] // hop
        parts = []
        for start, stop, ctx_start, ctx_stop in self._segments(frames):
            latent = self._encode_once(wave[..., ctx_start * hop:ctx_stop * hop])  # [B, C, ctx frames]
            parts.append(latent[..., start - ctx_start:stop - ctx_start])
        return torch.cat(parts, dim=-1).float().cpu()

    def _decode(self, latent: torch.Tensor) -> torch.Tensor:
        latent = latent.to(self.device)
        hop = self.hop_length
        parts = []
        for start, stop, ctx_start, ctx_stop in self._segments(latent.shape[-1]):
            wave = self.model.decoder(latent[..., ctx_start:ctx_stop])  # [B, 1, ctx frames * hop]
            parts.append(wave[..., (start - ctx_start) * hop:(stop - ctx_start) * hop])
        return torch.cat(parts, dim=-1).float().cpu()
