"""One process of ``tests/test_distributed.py``: one few-shot outer step on synthetic images.

Usage: ``python _distributed_worker.py OUT [COORDINATOR NUM_PROCESSES PROCESS_ID [ITERATIONS]]``; without
the coordinator it is the single-process reference. With ITERATIONS the run is long enough to be stopped
by a signal: then it exits 130 after printing the stop message, as the CLI does, and resumes when rerun.
Random images stand in for Omniglot, so no data set is needed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from l2l_pcm import distributed, training

MODEL = dict(
    channels=8,
    meta_batch=4,
    queries=2,
    variant="pcm",  # noise in the conv read and per task: checks that every task gets its single-process key
)
RUN = dict(iterations=1, validate_every=1, validation_tasks=2, checkpoint_every=1)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        distributed.initialize(argv[1], int(argv[2]), int(argv[3]))
    from l2l_pcm.fewshot.maml import MAMLConfig
    from l2l_pcm.fewshot.train import FewshotTrainConfig, make_trainer

    model, run = dict(MODEL), dict(RUN)
    long_run = len(argv) > 4
    if long_run:
        model.update(variant="fp32")
        run.update(iterations=int(argv[4]), validate_every=10_000, checkpoint_every=5)
    images = (np.random.default_rng(0).random((16, 20, 28, 28)) < 0.1).astype(np.float32)
    trainer = make_trainer(FewshotTrainConfig(model=MAMLConfig(**model), **run), images[:10], images[10:])
    last = Path(argv[0]) / training.LAST
    try:
        summary = training.run(trainer, argv[0], progress=False, resume=long_run and last.exists())
    except training.TrainingStopped as exc:
        print(exc, flush=True)
        return 130
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
