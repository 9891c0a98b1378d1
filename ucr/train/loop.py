"""A framework-agnostic training loop: AdamW, warm-up, gradient clipping, EMA, checkpoints, exact resume.

Everything random in step ``s`` (the batch, the diffusion noise, dropout) is seeded from ``(seed, s, rank)``, so a run
resumed from a checkpoint at step ``s`` continues exactly as if it had never stopped. Metrics and checkpoints are
reported through injected callbacks: Ray Train and MLflow plug in from ``jobs/`` without this module knowing them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ucr import checkpoint as ckpt
from ucr import storage
from ucr.train.ema import EMA

LossFn = Callable[[nn.Module, Any, torch.Generator], torch.Tensor]  # (model, batch, generator) -> loss [B]
BatchFn = Callable[[int], Any]  # step -> batch (tensor or tuple of tensors, on CPU)
# step -> the parameters to hold fixed in that step; called before the step's loss, so it may also set the loss up
# for that step. A pure function of the step, so a resumed run follows the same schedule
Schedule = Callable[[int], Iterable[nn.Parameter]]


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2**63 - 1)


@dataclass
class Hooks:
    """Callbacks injected by the caller (CLI, Ray Train worker, Tune trial)."""

    on_log: Callable[[int, dict], None] | None = None  # (step, metrics)
    on_checkpoint: Callable[[int, str], None] | None = None  # (step, checkpoint uri), after it is written
    on_eval: Callable[[int, nn.Module], dict | None] | None = None  # (step, model to evaluate) -> metrics
    eval_every: int = 0


@dataclass
class TrainResult:
    step: int
    final_uri: str | None
    metrics: dict = field(default_factory=dict)
    stopped_early: bool = False


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(b, device) for b in batch)
    return batch


def _call(model: nn.Module, batch: Any, generator: torch.Generator) -> torch.Tensor:
    if isinstance(batch, (tuple, list)):
        return model(*batch, generator=generator)
    return model(batch, generator=generator)


class Trainer:
    """Train ``model`` (a module whose ``forward(batch..., generator=)`` returns a per-example loss ``[B]``).

    ``model`` may be wrapped (DistributedDataParallel); checkpoints hold the unwrapped module. ``extra`` is stored in
    every checkpoint (config, kind, latent statistics, codec description) so a checkpoint describes itself.
    """

    def __init__(self, model: nn.Module, batch_fn: BatchFn, config, run_uri: str, extra: dict,
                 device: torch.device | None = None, rank: int = 0, world_size: int = 1,
                 hooks: Hooks | None = None, progress: bool = True, loss_fn: LossFn = _call,
                 schedule: Schedule | None = None) -> None:
        self.model = model
        self.module = getattr(model, "module", model)
        self.batch_fn = batch_fn
        self.config = config  # TrainConfig: steps, lr, weight_decay, warmup_steps, decay_steps, grad_clip, ema_decay, ...
        self.run_uri = run_uri
        self.extra = extra
        self.device = device or next(self.module.parameters()).device
        self.rank, self.world_size = rank, world_size
        self.hooks = hooks or Hooks()
        self.progress = progress and rank == 0
        self.loss_fn = loss_fn
        self.schedule = schedule  # step -> parameters held fixed in that step (it may also reconfigure the loss)
        self.optimizer = torch.optim.AdamW(self.module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.ema = EMA(self.module, config.ema_decay) if config.ema_decay > 0 else None
        self.step = 0

    # -- state -------------------------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {**self.extra, "model": self.module.state_dict(),
                "ema": self.ema.state_dict() if self.ema else None,
                "optimizer": self.optimizer.state_dict(), "step": self.step, "rng": ckpt.rng_state()}

    def load_state(self, payload: dict) -> None:
        self.module.load_state_dict(payload["model"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt.inference_weights(payload))
        self.optimizer.load_state_dict(payload["optimizer"])
        self.step = int(payload["step"])
        ckpt.set_rng_state(payload["rng"])

    def resume_if_possible(self) -> bool:
        latest = ckpt.latest(self.run_uri)
        if latest is None:
            return False
        self.load_state(ckpt.load(latest))
        return True

    def save_checkpoint(self) -> str:
        uri = storage.join(self.run_uri, "checkpoints", f"step-{self.step:08d}.pt")
        if self.rank == 0:
            ckpt.save(uri, self.state())
            ckpt.prune(self.run_uri, self.config.keep_checkpoints)
        if self.hooks.on_checkpoint:
            self.hooks.on_checkpoint(self.step, uri)
        return uri

    def logs_at(self, step: int) -> bool:
        """Whether :meth:`fit` logs after ``step`` (every ``log_every`` steps and the last)."""
        return step % self.config.log_every == 0 or step == self.config.steps

    def checkpoints_at(self, step: int) -> bool:
        """Whether :meth:`fit` checkpoints after ``step`` (every ``checkpoint_every`` steps and the last)."""
        return step % self.config.checkpoint_every == 0 or step == self.config.steps

    def lr_at(self, step: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based): linear warmup over ``warmup_steps``, constant, then
        a linear decay to 0 over the last ``decay_steps`` (step ``steps - decay_steps`` still runs at full rate)."""
        config = self.config
        factor = 1.0
        if config.warmup_steps > 0:
            factor = min(factor, (step + 1) / config.warmup_steps)
        if config.decay_steps > 0:
            factor = min(factor, max(0.0, (config.steps - step) / config.decay_steps))
        return config.lr * factor

    # -- the loop ----------------------------------------------------------------------------------------------------
    def train_step(self, batch: Any) -> tuple[float, float]:
        """One optimiser step on ``batch``; returns ``(loss, grad norm)``."""
        seed = step_seed(self.config.seed, self.step, self.rank)
        torch.manual_seed(seed)  # dropout
        generator = torch.Generator().manual_seed(seed + 1)  # diffusion noise and levels (on CPU: device-agnostic)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        self.model.train()
        held = tuple(self.schedule(self.step)) if self.schedule is not None else ()
        loss = self.loss_fn(self.model, _to_device(batch, self.device), generator).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {self.step}; lower train.lr or enable "
                                     f"train.grad_clip")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # (under DDP the gradients are all-reduced here, held ones included: every rank agrees)
        for parameter in held:  # no gradient: AdamW neither moves nor decays them
            parameter.grad = None
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), max_norm)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.module)
        self.step += 1
        return float(loss.detach()), float(grad_norm)

    def fit(self, resume: bool = True) -> TrainResult:
        from tqdm import tqdm

        config = self.config
        if resume:
            self.resume_if_possible()
        started = time.monotonic()
        deadline = started + config.max_minutes * 60 if config.max_minutes > 0 else math.inf
        bar = tqdm(total=config.steps, initial=self.step, desc="train", unit="step", disable=not self.progress,
                   dynamic_ncols=True)
        window_loss, window_steps, window_start = 0.0, 0, time.monotonic()
        metrics: dict = {}
        evaluated: dict = {}
        stopped_early = False
        saved_at = -1
        # per step: evaluate, log, checkpoint -- the log carries the fresh validation score, and a step's metrics
        # are recorded before its checkpoint (a run killed just after a checkpoint has no gap in its history). A
        # caller reporting to a scheduler that may stop it (Tune) reports at the checkpoint of such a step
        # (see jobs/train.py), so the checkpoint is on disk first
        while self.step < config.steps:
            loss, grad_norm = self.train_step(self.batch_fn(self.step))
            window_loss += loss
            window_steps += 1
            bar.update(1)
            if self.hooks.on_eval and self.hooks.eval_every and self.step % self.hooks.eval_every == 0:
                evaluated = self.hooks.on_eval(self.step, self.eval_model()) or evaluated
            stopped_early = time.monotonic() > deadline and self.step < config.steps
            if self.logs_at(self.step) or stopped_early:
                elapsed = max(time.monotonic() - window_start, 1e-9)
                metrics = {"loss": window_loss / window_steps, "lr": self.lr_at(self.step - 1),
                           "grad_norm": grad_norm, "steps_per_sec": window_steps / elapsed}
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", steps_s=f"{metrics['steps_per_sec']:.2f}")
                if self.hooks.on_log:
                    self.hooks.on_log(self.step, metrics)
                window_loss, window_steps, window_start = 0.0, 0, time.monotonic()
            if self.checkpoints_at(self.step) or stopped_early:
                self.save_checkpoint()
                saved_at = self.step
            if stopped_early:
                break
        bar.close()
        if saved_at != self.step:  # e.g. fit() called on a finished run
            self.save_checkpoint()
        metrics = {**metrics, **evaluated}
        final_uri = storage.join(self.run_uri, "final.pt")
        if self.rank == 0:
            ckpt.save(final_uri, self.state())
        return TrainResult(step=self.step, final_uri=final_uri, metrics=metrics, stopped_early=stopped_early)

    def eval_model(self) -> nn.Module:
        """The weights to evaluate and ship: the EMA when enabled."""
        return self.ema.model if self.ema is not None else self.module
