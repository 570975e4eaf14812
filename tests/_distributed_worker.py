"""One process of ``tests/test_distributed.py``: one few-shot outer step on synthetic images.

Usage: ``python _distributed_worker.py OUT [COORDINATOR NUM_PROCESSES PROCESS_ID]``; without the last
three it is the single-process reference. Random images stand in for Omniglot, so no data set is needed.
"""

from __future__ import annotations

import sys

import numpy as np

from l2l_pcm import distributed, training

CONFIG = dict(
    channels=8,
    meta_batch=4,
    queries=2,
    iterations=1,
    validate_every=1,
    validation_tasks=2,
    checkpoint_every=1,
    variant="pcm",  # noise in the conv read and per task: checks that every task gets its single-process key
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        distributed.initialize(argv[1], int(argv[2]), int(argv[3]))
    from l2l_pcm.fewshot.maml import MAMLConfig
    from l2l_pcm.fewshot.train import make_trainer

    images = (np.random.default_rng(0).random((16, 20, 28, 28)) < 0.1).astype(np.float32)
    trainer = make_trainer(MAMLConfig(**CONFIG), images[:10], images[10:])
    training.run(trainer, argv[0], progress=False)


if __name__ == "__main__":
    main(sys.argv[1:])
