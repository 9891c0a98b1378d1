"""Controlled ablations: train N variants of a preset at one fixed budget (same data, same steps, the same seed list)
and score each on the validation split in several separation modes; one markdown table (and a JSON file) out.

Each variant is a name and a list of ``--set`` overrides on the preset; every variant trains ``--steps`` steps for
every seed in ``--seeds``. Scores: windowed SI-SDRi, fixed matching, original stems (ucr.evaluate), for each mode in
``--modes`` on the same weights, plus the component x source matrix and the z correlation of the first mode.

Run (one core, in the background, as a research job):
  OMP_NUM_THREADS=1 nice .venv/bin/python tests/benchmarks/ablate.py --preset demo --data runs/db120_lat \\
      --variant paper: --variant cz2:model.component_channels=2 --seeds 0,1 --steps 800 --out runs/ablate
A variant is NAME:KEY=VALUE,KEY=VALUE (nothing after the colon = the preset as is); list values keep their commas,
e.g. small:model.unet_channels=[64,128],model.attention_levels=[1].
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition(":")
    if not name:
        raise SystemExit(f"--variant {text!r}: give NAME:KEY=VALUE,... (e.g. cz2:model.component_channels=2)")
    # a comma starts a new override only where KEY= follows, so list values stay whole: unet_channels=[64,128]
    return name, [o for o in re.split(r",(?=[A-Za-z_]+\.[A-Za-z_.]+=)", rest) if o]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--data", required=True, help="folder of latent caches with train/ and validation/ (stems)")
    parser.add_argument("--variant", action="append", required=True, help="NAME:KEY=VALUE,... (repeatable)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--modes", default="mixture_consistent,one_pass,one_pass_residual")
    parser.add_argument("--eval-chunks", type=int, default=40)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from ucr.config import load_config
    from ucr.evaluate import EvalOptions, evaluate
    from ucr.pipeline import Pipeline
    from ucr.train.tasks import build_decomposer_trainer

    rows = []
    modes = args.modes.split(",")
    for variant in args.variant:
        name, overrides = parse_variant(variant)
        for seed in (int(s) for s in args.seeds.split(",")):
            config = load_config(args.preset, overrides + [f"train.seed={seed}", f"train.steps={args.steps}",
                                                           f"train.checkpoint_every={args.steps}"])
            run = os.path.join(args.out, f"{name}_s{seed}")
            started = time.perf_counter()
            build_decomposer_trainer(config, os.path.join(args.data, "train"), run, progress=False).fit()
            train_seconds = time.perf_counter() - started
            pipeline = Pipeline.from_checkpoint(run)
            row = {"variant": name, "overrides": overrides, "seed": seed, "steps": args.steps,
                   "train_seconds": train_seconds, "scores": {}}
            for mode in modes:
                report = evaluate(pipeline, os.path.join(args.data, "validation"), os.path.join(run, f"eval_{mode}"),
                                  EvalOptions(steps=10, mode=mode, max_chunks=args.eval_chunks, nmf=False,
                                              irm=False, audio_examples=0), log=lambda _: None)
                row["scores"][mode] = {r["source"]: r["si_sdri"]["mean"] for r in report["results"]
                                       if r["method"] == "ucr" and r["matching"] == "fixed"
                                       and r["protocol"] == "windowed" and r["reference"] == "original"}
                row.setdefault("diagnostics", report["diagnostics"])
            rows.append(row)
            print(json.dumps(row), flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "ablation.json"), "w") as f:
        json.dump(rows, f, indent=1)
    sources = list(rows[0]["scores"][modes[0]])
    header = "| variant | seed | steps | train s | " + " | ".join(f"{m} {s}" for m in modes for s in sources) + \
        " | z corr |"
    lines = [header, "|" + "---|" * (5 + len(modes) * len(sources))]
    for row in rows:
        cells = [f"{row['scores'][m][s]:.2f}" for m in modes for s in sources]
        lines.append(f"| {row['variant']} | {row['seed']} | {row['steps']} | {row['train_seconds']:.0f} | "
                     + " | ".join(cells) + f" | {row['diagnostics']['z_correlation'][0][-1]:.2f} |")
    with open(os.path.join(args.out, "ablation.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
