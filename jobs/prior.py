"""Stage 4 — train the masked prior over the trained decomposer's component latents (Ray Train, same loop).

    python -m jobs.prior --preset demo --out runs/demo [--workers 1] [--address ...]
"""

from __future__ import annotations

from jobs import common, train


def parser():
    """The train job's arguments, described as this stage."""
    prior_parser = train.parser()
    prior_parser.description = __doc__
    return prior_parser


def main() -> None:
    common.run_main(lambda: train.run(parser().parse_args(), kind="prior"))


if __name__ == "__main__":
    main()
