"""Train a small EnCodec with Ray Train (``TorchTrainer``, DDP), tracked in MLflow like the other stages.

The same loop and model as ``ucr codec train`` (``ucr.codec.train``): transformers' ``EncodecModel`` of the
``codec.train_*`` sizes, on excerpts of the train split's mixtures; checkpoints in ``OUT/codec`` (local or s3://,
exact resume on resubmission), the weights exported to ``OUT/codec/encodec`` (``save_pretrained``) for
``codec.weights``.

    ray job submit --working-dir . -- python -m jobs.codec --preset demo --out runs/demo [--data DIR] [--workers 2]
"""

from __future__ import annotations

from jobs import common
from jobs import train as train_job


def parser():
    parser = common.base_parser(__doc__)
    train_job.add_scaling_args(parser)
    parser.add_argument("--data", help="audio dataset root (Slakh layout; local or s3://); default: OUT/data, what "
                                       "jobs.data rendered")
    return parser


def main() -> None:
    common.run_main(lambda: train_job.run(parser().parse_args(), kind="codec"))


if __name__ == "__main__":
    main()
