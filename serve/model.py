"""The model deployment: one :class:`ucr.pipeline.Pipeline`, requests delegated to it, new versions swapped in by
``reconfigure``. Takes and returns plain data (numpy arrays, dicts); HTTP is the ingress's business."""

import asyncio
import logging
import time
from dataclasses import dataclass

from ray import serve

from serve.settings import ModelSettings
from serve.source import ModelSource, checkpoint_name, resolve
from ucr import audio
from ucr.pipeline import Pipeline

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class LoadedModel:
    """A pipeline and where it came from; replaced as a whole on reconfigure, never mutated."""

    pipeline: Pipeline
    source: ModelSource
    loaded_at: float

    def describe(self) -> dict:
        return self.source.describe()


def _load(settings: ModelSettings) -> LoadedModel:
    started = time.perf_counter()
    source = resolve(settings.model, tracking_uri=settings.tracking_uri)
    try:
        pipeline = Pipeline.from_checkpoint(source.checkpoint, device=settings.device,
                                            component_sources=source.card.get("component_sources"))
    finally:
        source.cleanup()  # the weights are in memory now; downloaded files are not needed
    logger.info("loaded %s (version %s) in %.1f s", source.reference, source.version,
                time.perf_counter() - started)
    return LoadedModel(pipeline, source, time.time())


class Failure(dict):
    """A request the pipeline refused: ``{"status": 4xx, "detail": message}`` (returned, not raised, so it crosses
    the handle as plain data)."""


def _failure(status: int, detail: str) -> Failure:
    return Failure(status=status, detail=detail)


def _run(loaded: LoadedModel, task, *args) -> dict | Failure:
    """Call ``task(loaded, *args)``; a ``ValueError`` of the pipeline is the caller's fault (422, 400 for audio)."""
    started = time.perf_counter()
    try:
        result = task(loaded, *args)
    except audio.AudioError as err:
        return _failure(400, str(err))
    except ValueError as err:
        return _failure(422, str(err))
    return _answered(loaded, result, started)


def _answered(loaded: LoadedModel, result: dict | Failure, started: float) -> dict | Failure:
    """A task's result with the model that produced it and the seconds since ``started`` (a refusal unchanged)."""
    if isinstance(result, Failure):
        return result
    return {**result, "model": loaded.describe(), "elapsed_s": round(time.perf_counter() - started, 4)}


def _separation_settings(pipeline, job: dict) -> tuple[int, str, float] | Failure:
    """The job's (steps, mode, alpha) with the model's defaults filled in (by the pipeline), or the 422 for a
    component out of range or a setting the pipeline refuses."""
    K = pipeline.n_components
    component = job.get("component")
    if component is not None and not 0 <= component < K:
        return _failure(422, f"component={component} is out of range: this model has {K} components, "
                             f"use 0..{K - 1}")
    try:
        return (pipeline.resolve_steps(job.get("steps")), pipeline.resolve_mode(job.get("mode")),
                pipeline.resolve_alpha(job.get("alpha")))
    except ValueError as err:
        return _failure(422, str(err))


def _separation_answer(pipeline, job: dict, result, steps: int, mode: str, alpha: float) -> dict:
    K = pipeline.n_components
    indices = list(range(K)) if job.get("component") is None else [job["component"]]
    return {"components": result.components[indices], "indices": indices, "sample_rate": result.sample_rate,
            "steps": steps, "seed": job["seed"], "mode": mode, "alpha": alpha, "n_components": K}


def _separate(loaded: LoadedModel, job: dict) -> dict | Failure:
    pipeline = loaded.pipeline
    settings = _separation_settings(pipeline, job)
    if isinstance(settings, Failure):
        return settings
    steps, mode, alpha = settings
    result = pipeline.separate(job["wave"], job["sample_rate"], steps=steps, seed=job["seed"], mode=mode,
                               alpha=alpha)
    return _separation_answer(pipeline, job, result, steps, mode, alpha)


def _separate_jobs(loaded: LoadedModel, jobs: list[dict]) -> list[dict | Failure]:
    """A Serve batch of separation jobs: those that share steps, mode and alpha go through one
    :meth:`ucr.pipeline.Pipeline.separate_batch` (their windows share decoder batches; each keeps its own seed and
    gets what it would alone). Should the pipeline refuse one of them, the group runs one job at a time so that
    each gets its own answer."""
    pipeline = loaded.pipeline
    results: list[dict | Failure | None] = [None] * len(jobs)
    groups: dict[tuple[int, str, float], list[int]] = {}
    for i, job in enumerate(jobs):
        settings = _separation_settings(pipeline, job)
        if isinstance(settings, Failure):
            results[i] = settings
        else:
            groups.setdefault(settings, []).append(i)
    for (steps, mode, alpha), members in groups.items():
        if len(members) > 1:
            started = time.perf_counter()
            try:
                separations = pipeline.separate_batch([(jobs[i]["wave"], jobs[i]["sample_rate"]) for i in members],
                                                      [jobs[i]["seed"] for i in members], steps=steps, mode=mode,
                                                      alpha=alpha)
            except ValueError:  # AudioError included: one input is unusable
                separations = None
            if separations is not None:
                for i, separation in zip(members, separations):  # elapsed_s: the batch's time
                    answer = _separation_answer(pipeline, jobs[i], separation, steps, mode, alpha)
                    results[i] = _answered(loaded, answer, started)
                continue
        for i in members:
            results[i] = _run(loaded, _separate, jobs[i])
    return results


def _require_prior(loaded: LoadedModel, what: str) -> Failure | None:
    if loaded.pipeline.prior is None:
        return _failure(409, f"the served model {loaded.source.public_reference} has no prior, so it cannot {what}; serve a "
                             f"prior checkpoint (trained with `ucr train-prior`, which embeds its decomposer)")
    return None


def _generate(loaded: LoadedModel, job: dict) -> dict | Failure:
    refused = _require_prior(loaded, "generate")
    if refused:
        return refused
    pipeline = loaded.pipeline
    steps = pipeline.resolve_steps(job.get("steps"))
    out = pipeline.generate(n=job["count"], seconds=job["seconds"], seed=job["seed"], steps=steps)
    return {"mixtures": out["mixture"], "components": out["components"], "sample_rate": out["sample_rate"],
            "steps": steps, "seed": job["seed"], "n_components": pipeline.n_components}


def _vary(loaded: LoadedModel, job: dict) -> dict | Failure:
    refused = _require_prior(loaded, "vary")
    if refused:
        return refused
    pipeline = loaded.pipeline
    K, keep = pipeline.n_components, job["keep"]
    steps = pipeline.resolve_steps(job.get("steps"))  # keep is checked by Pipeline.vary (422)
    out = pipeline.vary(job["wave"], job["sample_rate"], keep=keep, seed=job["seed"], steps=steps, n=job["count"])
    return {"mixtures": out["mixture"], "components": out["components"], "sample_rate": out["sample_rate"],
            "steps": steps, "seed": job["seed"], "keep": keep, "n_components": K}


@serve.deployment(name="UCRModel", max_ongoing_requests=8, max_queued_requests=16,
                  ray_actor_options={"num_cpus": 1}, graceful_shutdown_timeout_s=120)
class UCRModel:
    """Holds the pipeline; every method takes plain data and returns plain data (or a :class:`Failure`)."""

    def __init__(self) -> None:
        self._loaded: LoadedModel | None = None
        self._settings: ModelSettings | None = None
        self._reload_error: str | None = None
        self._lock = asyncio.Lock()  # one reconfigure at a time

    async def reconfigure(self, user_config: dict) -> None:
        """Apply a new ``user_config``. A new model is loaded on a worker thread while requests keep being served by
        the current one, then swapped in with a single assignment. If a *later* load fails the replica keeps the model
        it has (and ``/model`` reports the error); the first load failing fails the replica."""
        settings = ModelSettings.from_dict(user_config)
        async with self._lock:
            self._separate_batch.set_max_batch_size(settings.max_batch_size)
            self._separate_batch.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
            previous, self._settings = self._settings, settings
            if previous is not None and previous.load_key() == settings.load_key() and self._loaded is not None:
                return
            try:
                loaded = await asyncio.to_thread(_load, settings)
            except Exception as err:
                if self._loaded is None:
                    raise
                # the full error (paths included) goes to the replica log; clients see the reference and its type
                requested = settings.model.strip()
                shown = requested if requested.startswith("models:/") else checkpoint_name(requested or "?")
                self._reload_error = f"{type(err).__name__} while loading {shown}; see the replica log"
                logger.error("reconfigure to %s failed; still serving %s: %s: %s", settings.model,
                             self._loaded.source.reference, type(err).__name__, err)
                return
            self._loaded, self._reload_error = loaded, None  # the swap: in-flight requests hold the old one

    def _current(self) -> LoadedModel:
        assert self._loaded is not None, "reconfigure() has not loaded a model yet"
        return self._loaded

    async def info(self) -> dict:
        loaded = self._current()
        pipeline = loaded.pipeline
        config = pipeline.config
        return {**loaded.describe(), "card": loaded.source.card, "loaded_at": loaded.loaded_at,
                "reload_error": self._reload_error,
                "config": {"preset": config.name, "codec": config.codec.name, "n_components": pipeline.n_components,
                           "sources": pipeline.metadata.get("sources"), "has_prior": pipeline.prior is not None,
                           "component_names": list(pipeline.component_names),
                           "sample_rate": pipeline.sample_rate, "sampler_steps": config.diffusion.sampler_steps,
                           "separation": config.diffusion.separation,
                           "one_pass_alpha": config.diffusion.one_pass_alpha,
                           "kind": "prior" if pipeline.prior is not None else pipeline.metadata.get("kind"),
                           "step": pipeline.metadata.get("step")},
                "batching": {"enabled": self._settings.batching, "max_batch_size": self._settings.max_batch_size,
                             "batch_wait_timeout_s": self._settings.batch_wait_timeout_s},
                "replica": serve.get_replica_context().replica_id.unique_id}

    async def separate(self, job: dict) -> dict | Failure:
        """``job``: wave ``[channels, L]``, sample_rate, steps / mode / alpha (None: the model's), seed, component."""
        if self._settings.batching:
            return await self._separate_batch(job)
        loaded = self._current()
        return await asyncio.to_thread(_run, loaded, _separate, job)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.02)
    async def _separate_batch(self, jobs: list[dict]) -> list[dict | Failure]:
        # One model for the whole batch, taken once: a reconfigure during the batch does not mix versions.
        loaded = self._current()
        return await asyncio.to_thread(_separate_jobs, loaded, jobs)

    async def generate(self, job: dict) -> dict | Failure:
        return await asyncio.to_thread(_run, self._current(), _generate, job)

    async def vary(self, job: dict) -> dict | Failure:
        return await asyncio.to_thread(_run, self._current(), _vary, job)
