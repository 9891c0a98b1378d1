"""The registered model as an MLflow ``pyfunc`` model, logged "from code" by the register stage.

MLflow copies this file into the model version and runs it when the model is loaded
(``mlflow.pyfunc.load_model("models:/ucr@champion")``, ``mlflow models serve -m models:/ucr@champion``); it defines
:class:`Separator` and hands an instance to MLflow (``set_model``). Nothing is unpickled: the weights are the
version's ``checkpoint`` artifact, read by the project's data-only checkpoint loader through
:meth:`ucr.pipeline.Pipeline.from_checkpoint`. The environment must have the ``ucr`` package installed
(``--env-manager local`` with the project's virtualenv).

Input: a table with one row per clip, ``audio`` (the waveform as a list of floats, mono) and ``sample_rate``.
Output: one row per (clip, component): ``input`` (the clip's row), ``component`` (k), ``name`` (the source the
component stands for when the checkpoint knows, else ``componentK``), ``sample_rate`` (the codec's) and ``audio``.
Params: ``steps`` (sampler steps), ``mode`` (separation mode), ``seed``.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

INPUT_COLUMNS = ("audio", "sample_rate")
OUTPUT_COLUMNS = ("input", "component", "name", "sample_rate", "audio")


class Separator(mlflow.pyfunc.PythonModel):
    """Wraps :class:`ucr.pipeline.Pipeline`: separation only (generation and variation are the Serve app's)."""

    def load_context(self, context) -> None:
        from ucr.pipeline import Pipeline

        self.pipeline = Pipeline.from_checkpoint(context.artifacts["checkpoint"], device="auto")

    def predict(self, context, model_input, params=None):
        params = params or {}
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        missing = [column for column in INPUT_COLUMNS if column not in frame.columns]
        if missing:
            raise ValueError(f"the input needs the columns {list(INPUT_COLUMNS)} (one row per clip: the waveform as "
                             f"a list of floats and its sample rate); missing {missing}")
        steps = params.get("steps")
        mode = params.get("mode") or None
        seed = int(params.get("seed") or 0)
        rows = []
        for index, (wave, rate) in enumerate(zip(frame["audio"], frame["sample_rate"])):
            wave = np.asarray(wave, dtype=np.float32)  # [L] (JSON numbers arrive as doubles)
            result = self.pipeline.separate(wave, int(rate), steps=None if steps is None else int(steps),
                                            seed=seed, mode=mode)
            for k, (name, component) in enumerate(zip(result.names, result.components)):
                rows.append((index, k, name, result.sample_rate, component.astype(np.float32).tolist()))
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


mlflow.models.set_model(Separator())  # what MLflow's "models from code" loading looks for
