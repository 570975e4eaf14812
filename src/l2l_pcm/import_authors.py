"""Turn the authors' pretrained models into ordinary l2l-pcm checkpoints (``l2l-pcm import-authors``).

The weights are read by :func:`l2l_pcm.authors_pickle.read_authors_pickle` (a restricted unpickler; no
TensorFlow, nothing in the file runs). The checkpoint's config records every convention the models were
trained and evaluated under (as their code in github.com/IGITUGraz/RapidLearningInMemoryComputing runs
them), so ``fewshot eval`` / ``robot eval`` reproduce the authors' setting without flags:

* few-shot: pixel polarity ``ink="zero"`` (their background = 1), ``normalisation="per_set"`` (their
  transductive batch norm; ``--normalisation support`` on ``fewshot eval`` gives the leak-free rule),
  Keras ε = 1e-3, inner lr 0.1 with stochastic rounding of updates to 1/16, device profile ``authors``;
* robot: device profile ``authors`` (t/t0 = 32, initial jitter, |w| > 1 reflected, re-programming from
  the drifted weight), ``W_out`` on PCM, the wrap-around target code, no clipping of predicted angles,
  hardware-aware (their default ``noise_trainee=True``), so software ``trained`` precision is ``pcm``.

Attribution (kept in every converted file's metadata): the weights are the authors' (Ortner et al.),
from IGITUGraz/RapidLearningInMemoryComputing commit cc689bd, Apache License 2.0.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from l2l_pcm import _io
from l2l_pcm.authors_pickle import read_authors_pickle, sha256_of
from l2l_pcm.checkpoint import save_checkpoint
from l2l_pcm.chip import ChipConfig, ClockConfig, ForwardConfig, UpdateConfig
from l2l_pcm.errors import CheckpointError, ConfigError
from l2l_pcm.pcm import device_profile

AUTHORS_HARDWARE = ChipConfig(
    device=device_profile("authors"),
    forward=ForwardConfig(read_noise_rng="threefry"),
    clock=ClockConfig(training_age_s=32.0),
)
"""The hardware the authors' imported models deploy on: their device profile read at their t/t0 = 32
s, and the generator every published figure of them was measured with. Few-shot: stochastic rounding of
inner updates (the tree's default); robot: nearest (:func:`robot_config`)."""
ATTRIBUTION = (
    "Weights by Ortner et al. (Nat. Commun. 2025), from IGITUGraz/RapidLearningInMemoryComputing commit "
    "cc689bdf89833e6c765a35fa0f31b9b153b59f9c, Apache License 2.0; converted by l2l-pcm import-authors."
)
ROBOT_NAMES = {
    "W_in_trainee": "trainee_w_in",
    "W_rec_trainee": "trainee_w_rec",
    "W_out_trainee": "trainee_w_out",
    "W_in_lsg": "lsg_w_in",
    "W_rec_lsg": "lsg_w_rec",
    "W_out_lsg": "lsg_w_out",
}


def fewshot_config(channels: int, ways: int):
    """The few-shot config of the authors' model (their ``few_shot_image_classification/main.py`` and
    ``maml_trainee_omniglot.py``; Ortner et al. 2025, arXiv:2405.05141, Fig. 2: four inner updates)."""
    from l2l_pcm.fewshot.maml import MAMLConfig

    return MAMLConfig(
        ways=ways,
        channels=channels,
        inner_steps=4,
        inner_lr=0.1,
        update_budget=0,
        normalisation="per_set",
        norm_epsilon=1e-3,
        ink="zero",
        hardware=AUTHORS_HARDWARE,
    )


def robot_config():
    """The robot config of the authors' model (their ``online_learning_robot/main.py`` defaults,
    ``datasets/trajectories.py``, ``model/l2l_trainee_lsg.py`` and ``module/pcm.py``)."""
    from l2l_pcm.robot.model import RobotConfig
    from l2l_pcm.robot.train import RobotTrainConfig

    model = RobotConfig(
        batch=90,
        hardware_aware=True,
        hardware=dataclasses.replace(AUTHORS_HARDWARE, update=UpdateConfig(rounding="nearest")),
        xyz_code="authors",
        clip_predicted_angles=False,
        w_out_on_pcm=True,
    )
    return RobotTrainConfig(model=model)


def _check_robot_shapes(params: dict[str, np.ndarray], config, source: str) -> None:
    import jax

    from l2l_pcm.robot.model import init_params

    template = init_params(jax.random.PRNGKey(0), config.model)
    for name, value in params.items():
        if value.shape != template[name].shape:
            raise CheckpointError(
                f"{source}: {name} has shape {value.shape}, the authors' network needs {template[name].shape}"
            )


def import_authors(
    scenario: str, source: str | os.PathLike, destination: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Convert the authors' ``scenario`` ("fewshot" or "robot") pickle at ``source``; nothing is written on error.
    The destination is never the source, and an existing file is replaced only with ``overwrite``."""
    from l2l_pcm.fewshot.train import save_fewshot_checkpoint
    from l2l_pcm.robot.train import CHECKPOINT_KIND as ROBOT_KIND

    if scenario not in ("fewshot", "robot"):
        raise ConfigError(f"scenario must be 'fewshot' or 'robot', got {scenario!r}")
    destination = _io.refuse_output(destination, (source,), overwrite)
    source = Path(source)
    arrays = read_authors_pickle(source, scenario)
    provenance = {"imported_from": source.name, "source_sha256": sha256_of(source), "attribution": ATTRIBUTION}
    if scenario == "fewshot":
        channels, ways = arrays["readout"].shape
        config = fewshot_config(int(channels), int(ways))
        params = {name: jnp.asarray(value) for name, value in arrays.items()}
        return save_fewshot_checkpoint(destination, params, config, provenance)
    config = robot_config()
    params = {ROBOT_NAMES[name]: np.array(value) for name, value in arrays.items()}
    _check_robot_shapes(params, config, str(source))
    for name in ("trainee_w_rec", "lsg_w_rec"):  # masked in the authors' forward pass: no self-connections
        np.fill_diagonal(params[name], 0.0)
    params = {name: jnp.asarray(value) for name, value in params.items()}
    return save_checkpoint(destination, ROBOT_KIND, {"params": params}, {"config": config.to_json(), **provenance})
