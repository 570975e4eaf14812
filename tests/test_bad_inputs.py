"""Bad inputs through the CLI: exit code 2, exactly one ``error: ...`` line, no traceback, nothing saved lost.

Each case is a generator registered with :func:`case`: it prepares files under a temp folder, yields the
command line, and after the CLI has run checks that what was saved before is intact. The same cases
print the table of ``docs/bad_inputs.md`` (``python tests/_bad_inputs_table.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from l2l_pcm.cli import main
from l2l_pcm.fewshot.maml import MAMLConfig
from l2l_pcm.fewshot.model import init_params as fewshot_init
from l2l_pcm.snn import LSGConfig, TraineeConfig

SMALL_ROBOT_MODEL = dict(
    trainee=dict(n_in=5, n_rec=12),
    lsg=dict(n_in=5 + 3 * 4, n_rec=16, n_out=12),
    n_steps=60,
    smoothing_window=30,
    clock_interval_steps=12,
    clock_period_steps=3,
    xyz_bits=4,
    batch=2,
    eta=0.05,
)
SMALL_ROBOT = dict(model=SMALL_ROBOT_MODEL, iterations=2, validate_every=2, validation_tasks=3, checkpoint_every=1)
AUTHORS = Path(__file__).resolve().parents[2] / "shared/reference/authors_checkpoints"
TINY_FEWSHOT = MAMLConfig(channels=8, meta_batch=2, queries=2)
TINY_FEWSHOT_RUN = dict(iterations=2, validate_every=2, validation_tasks=2)


def run_cli(argv: list[str]) -> tuple[int, str]:
    """Exit code and stderr of ``l2l-pcm argv`` in this process (argparse's exit counts as a return)."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, err.getvalue()


def error_line(stderr: str) -> str:
    """The one ``error: ...`` line; fails on anything else (tracebacks, warnings, several lines)."""
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


# ------------------------------------------------------------------------------------- shared files
class Files:
    """Small files the cases start from, made on first use under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[str, Path] = {}

    def _once(self, name: str, make: Callable[[Path], None]) -> Path:
        if name not in self._made:
            path = self.root / name
            make(path)
            self._made[name] = path
        return self._made[name]

    def robot_config(self, **changes) -> Path:
        data = json.loads(json.dumps(SMALL_ROBOT))
        data.update(changes)
        path = self.root / f"robot_{len(list(self.root.glob('robot_*.json')))}.json"
        path.write_text(json.dumps(data))
        return path

    def fewshot_config(self, **changes) -> Path:
        """A few-shot run config file: the tiny model with ``changes`` (a run setting beside it, a model
        setting in it)."""
        run = {name: changes.pop(name) for name in ("iterations", "validate_every", "seed") if name in changes}
        data = {**TINY_FEWSHOT_RUN, **run, "model": {**TINY_FEWSHOT.to_json(), **changes}}
        path = self.root / f"fewshot_{len(list(self.root.glob('fewshot_*.json')))}.json"
        path.write_text(json.dumps(data, allow_nan=True))
        return path

    def robot_run(self) -> Path:
        """A finished 2-iteration robot run folder (checkpoints and metrics)."""

        def make(path: Path) -> None:
            assert run_cli(["robot", "train", "--config", str(self.robot_config()), "--out", str(path)])[0] == 0

        return self._once("robot_run", make)

    def copy_of_robot_run(self, name: str) -> Path:
        destination = self.root / name
        shutil.copytree(self.robot_run(), destination)
        return destination

    def fewshot_checkpoint(self) -> Path:
        from l2l_pcm.fewshot.train import save_fewshot_checkpoint

        return self._once(
            "fewshot.safetensors",
            lambda path: save_fewshot_checkpoint(
                path, fewshot_init(jax.random.PRNGKey(0), TINY_FEWSHOT.cnn), TINY_FEWSHOT
            ),
        )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


# --------------------------------------------------------------------------------------------- cases
CaseFn = Callable[[Files, pytest.MonkeyPatch], Iterator[list[str]]]
CASES: dict[str, tuple[str, str, CaseFn, bool]] = {}


def case(description: str, expect: str, needs_data: bool = False) -> Callable[[CaseFn], CaseFn]:
    """Register a case: what is wrong (for the table) and a regex the error line must match."""

    def register(fn: CaseFn) -> CaseFn:
        CASES[fn.__name__] = (description, expect, fn, needs_data)
        return fn

    return register


def shared_data() -> Path | None:
    from conftest import SHARED

    return SHARED


# data
@case("data dir does not exist", r"Omniglot data directory not found: .*nowhere")
def missing_data_dir(files, mp):
    yield ["fewshot", "train", "--out", str(files.root / "run"), "--data-dir", str(files.root / "nowhere")]
    assert not (files.root / "run").exists()


@case("data dir is a file", r"Omniglot data directory is not a folder")
def data_dir_is_a_file(files, mp):
    (files.root / "afile").write_text("x")
    yield ["fewshot", "train", "--out", str(files.root / "run"), "--data-dir", str(files.root / "afile")]


@case("data of the wrong format (garbage npz) = failed checksum", r"checksum mismatch for .*omniglot_background\.npz")
def garbage_npz(files, mp):
    (files.root / "data").mkdir()
    (files.root / "data" / "omniglot_background.npz").write_bytes(b"PK\x03\x04 not really a zip")
    yield ["fewshot", "train", "--out", str(files.root / "run"), "--data-dir", str(files.root / "data")]


@case("data of the wrong format (garbage zip)", r"cannot read Omniglot zip .*images_background\.zip")
def garbage_zip(files, mp):
    (files.root / "data").mkdir()
    (files.root / "data" / "images_background.zip").write_bytes(b"garbage")
    yield ["fewshot", "train", "--out", str(files.root / "run"), "--data-dir", str(files.root / "data")]


# checkpoints
@case("truncated checkpoint (eval)", r"corrupt or truncated checkpoint .*cut\.safetensors")
def truncated_checkpoint(files, mp):
    data = files.fewshot_checkpoint().read_bytes()
    (files.root / "cut.safetensors").write_bytes(data[: len(data) // 2])
    yield ["fewshot", "eval", "--checkpoint", str(files.root / "cut.safetensors"), "--tasks", "2"]


@case("garbage checkpoint (eval)", r"junk\.safetensors is not a safetensors file")
def garbage_checkpoint(files, mp):
    (files.root / "junk.safetensors").write_bytes(os.urandom(300))
    yield ["robot", "eval", "--checkpoint", str(files.root / "junk.safetensors"), "--tasks", "2"]


@case("corrupt last.safetensors on --resume", r"corrupt or truncated checkpoint .*last\.safetensors")
def corrupt_resume(files, mp):
    run = files.copy_of_robot_run("corrupt_run")
    last = run / "last.safetensors"
    last.write_bytes(last.read_bytes()[:-64])
    before = snapshot(run)
    yield [
        "robot",
        "train",
        "--config",
        str(files.robot_config(iterations=4)),
        "--out",
        str(run),
        "--resume",
        "--no-progress",
    ]
    assert snapshot(run) == before


@case("safetensors file that is not an l2l-pcm checkpoint", r"not an l2l-pcm checkpoint \(no metadata\)")
def foreign_safetensors(files, mp):
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(3, np.float32)}, str(files.root / "foreign.safetensors"))
    yield ["export", str(files.root / "foreign.safetensors"), str(files.root / "out.safetensors")]
    assert not (files.root / "out.safetensors").exists()


@case(
    "checkpoint of the other scenario (robot eval of a few-shot file)",
    r"holds a 'fewshot-maml' checkpoint, expected 'robot-l2l'",
)
def other_scenario_robot(files, mp):
    yield ["robot", "eval", "--checkpoint", str(files.fewshot_checkpoint()), "--tasks", "2"]


@case(
    "checkpoint of the other scenario (few-shot eval of a robot file)",
    r"holds a 'robot-l2l' checkpoint, expected 'fewshot-maml'",
)
def other_scenario_fewshot(files, mp):
    yield ["fewshot", "eval", "--checkpoint", str(files.robot_run() / "last.safetensors"), "--tasks", "2"]


@case(
    "checkpoint of a different model size",
    r"tensor 'params/conv1' has shape \(3, 3, 1, 12\), model needs \(3, 3, 1, 8\)",
)
def other_model_size(files, mp):
    from l2l_pcm.checkpoint import save_checkpoint

    bigger = fewshot_init(jax.random.PRNGKey(0), dataclasses.replace(TINY_FEWSHOT, channels=12).cnn)
    path = files.root / "bigger.safetensors"
    from l2l_pcm.fewshot.train import FewshotTrainConfig

    metadata = {"config": FewshotTrainConfig(model=TINY_FEWSHOT).to_json()}
    save_checkpoint(path, "fewshot-maml", {"params": bigger}, metadata)
    yield ["fewshot", "eval", "--checkpoint", str(path), "--tasks", "2"]


@case(
    "--resume to an iteration the run has reached (its config read from the run)",
    r"last.safetensors is at iteration 2, and the run is to end at iteration 2: nothing to do",
)
def resume_nothing_to_do(files, mp):
    run = files.copy_of_robot_run("done_run")
    before = snapshot(run)
    yield ["robot", "train", "--out", str(run), "--resume", "--iterations", "2", "--no-progress"]
    assert snapshot(run) == before


@case("train --out '' (an unset shell variable)", r"--out is empty \(an unset variable\?\)")
def train_out_empty(files, mp):
    yield ["robot", "train", "--config", str(files.robot_config()), "--out", ""]


@case("eval --checkpoint '' (an unset shell variable)", r"--checkpoint is empty \(an unset variable\?\)")
def eval_checkpoint_empty(files, mp):
    yield ["robot", "eval", "--checkpoint", "", "--tasks", "2"]


@case(
    "a deployment age past float32's reach (--time-since-programming 1e40)",
    r"clock.deployment_age_s: must be None or a number of seconds in \[0, .*\] \(1000 years\), got 1e\+40",
)
def age_overflow(files, mp):
    yield ["robot", "eval", "--time-since-programming", "1e40", "--tasks", "2"]


@case("more device samples than memory allows (chip stats)", r"samples must be in 2\.\.10,000,000 .*got 10000000000")
def too_many_samples(files, mp):
    yield ["chip", "stats", "--samples", "10000000000"]


@case(
    "--device with the fp32 software model (it has no devices)",
    r"--device does not apply to the fp32 software model \(it has no devices\)",
    needs_data=True,
)
def device_on_fp32_software(files, mp):
    yield ["fewshot", "eval", "--backend", "software", "--device", "hermes", "--tasks", "2"]


@case("--device /dev/zero (no end to read)", r"config /dev/zero is larger than 1 MiB: not a config file")
def device_dev_zero(files, mp):
    yield ["robot", "eval", "--device", "/dev/zero", "--tasks", "2"]


@case(
    "more evaluation tasks than a run could finish (--tasks 100000000)",
    r"must be an integer in 2\.\.100,000 .*got 100000000",
)
def too_many_tasks(files, mp):
    yield ["robot", "eval", "--tasks", "100000000"]


@case(
    "--init-from the run's own best.safetensors with --overwrite",
    r"best.safetensors is the run's own best.safetensors, which the run writes",
)
def init_from_own_output(files, mp):
    run = files.copy_of_robot_run("own_init_run")
    before = snapshot(run)
    config = str(files.robot_config())
    yield [
        "robot",
        "train",
        "--config",
        config,
        "--out",
        str(run),
        "--init-from",
        str(run / "best.safetensors"),
        "--overwrite",
    ]
    assert snapshot(run) == before


@case(
    "a readout scale float32 cannot hold (--readout-scale 1e-300: the readout read NaN, accuracy at chance)",
    r"readout_scale must be in \[1e-06, 1e\+06\] .*got 1e-300",
    needs_data=True,
)
def readout_scale_underflow(files, mp):
    yield [
        "fewshot",
        "eval",
        "--backend",
        "software",
        "--precision",
        "pcm",
        "--readout-scale",
        "1e-300",
        "--tasks",
        "2",
    ]


@case("--resume with another config", r"was trained with another config \(only --iterations may change on resume\)")
def resume_other_config(files, mp):
    run = files.copy_of_robot_run("other_config_run")
    before = snapshot(run)
    yield ["robot", "train", "--config", str(files.robot_config()), "--out", str(run), "--resume", "--batch", "4"]
    assert snapshot(run) == before


@case(
    "meta-training --init-from a checkpoint of the other scenario",
    r"holds a 'robot-l2l' checkpoint, expected 'fewshot-maml'",
    needs_data=True,
)
def init_from_other_scenario(files, mp):
    run = files.root / "run"
    yield ["fewshot", "train", "--out", str(run), "--init-from", str(files.robot_run() / "last.safetensors")]
    assert not run.exists()


# impossible tasks
@case(
    'impossible task: shots + queries > 20, config `{"shots": 15, "queries": 10}`',
    r"shots \+ queries = 25 exceeds the 20 drawings",
)
def too_many_drawings(files, mp):
    yield [
        "fewshot",
        "train",
        "--out",
        str(files.root / "run"),
        "--config",
        str(files.fewshot_config(shots=15, queries=10)),
    ]


@case(
    'impossible task: ways > classes, config `{"ways": 1000}`',
    r"ways=1000 exceeds the number of classes",
    needs_data=True,
)
def too_many_ways(files, mp):
    config = files.fewshot_config(ways=1000)
    yield [
        "fewshot",
        "train",
        "--out",
        str(files.root / "run"),
        "--config",
        str(config),
        "--data-dir",
        str(shared_data()),
    ]
    assert not (files.root / "run").exists()


@case(
    "impossible task: --queries 16 with 5 shots (eval)", r"shots\+queries=21 exceeds the 20 drawings", needs_data=True
)
def too_many_queries(files, mp):
    checkpoint = str(files.fewshot_checkpoint())
    yield ["fewshot", "eval", "--checkpoint", checkpoint, "--queries", "16", "--data-dir", str(shared_data())]


# sizes, rates, times
@case("zero iterations (CLI)", r"argument --iterations: expected a positive integer, got '0'")
def zero_iterations(files, mp):
    yield ["fewshot", "train", "--out", str(files.root / "run"), "--iterations", "0"]


@case("negative batch (CLI)", r"argument --batch: expected a positive integer, got '-3'")
def negative_batch(files, mp):
    yield ["robot", "train", "--out", str(files.root / "run"), "--batch", "-3"]


@case("zero samples (CLI)", r"argument --samples: expected a positive integer, got '0'")
def zero_samples(files, mp):
    yield ["chip", "stats", "--samples", "0"]


@case("negative time since programming (CLI)", r"argument --time-since-programming: expected a duration >= 0")
def negative_time(files, mp):
    yield ["robot", "eval", "--time-since-programming", "-1"]


@case("NaN time since programming (CLI)", r"argument --time-since-programming: expected a duration >= 0 .*got 'nan'")
def nan_time(files, mp):
    yield ["fewshot", "eval", "--time-since-programming", "nan"]


@case("per-task file of an unknown format (CLI)", r"argument --per-task: per-task file 'tasks\.txt' must end in \.csv")
def per_task_format(files, mp):
    yield ["fewshot", "eval", "--per-task", "tasks.txt", "--tasks", "2"]


@case("several chip instances for the software model", r"--chips applies to the chip only")
def chips_in_software(files, mp):
    yield ["robot", "eval", "--backend", "software", "--chips", "3", "--tasks", "2"]


@case("seed out of range (CLI)", r"argument --seed: expected an integer in 0\.\.4294967295, got '-1'")
def negative_seed(files, mp):
    yield ["robot", "eval", "--seed", "-1"]


@case(
    "one robot evaluation task (no confidence interval)",
    r"number of tasks must be an integer in 2\.\.100,000 \(two at least, for a confidence interval\), got 1",
)
def one_robot_task(files, mp):
    yield ["robot", "eval", "--checkpoint", str(files.robot_run() / "last.safetensors"), "--tasks", "1"]


@case('negative learning rate, config `{"outer_lr": -0.001}`', r"outer_lr must be a finite number > 0, got -0\.001")
def negative_lr(files, mp):
    yield ["fewshot", "train", "--out", str(files.root / "run"), "--config", str(files.fewshot_config(outer_lr=-1e-3))]


@case('NaN learning rate, config `{"inner_lr": NaN}`', r"inner_lr must be a finite number > 0, got nan")
def nan_lr(files, mp):
    yield [
        "fewshot",
        "train",
        "--out",
        str(files.root / "run"),
        "--config",
        str(files.fewshot_config(inner_lr=float("nan"))),
    ]


@case(
    'negative age, config `{"hardware": {"clock": {"training_age_s": -1}}}`',
    r"few-shot config.model.hardware.clock.training_age_s: must be a number of seconds in \[0, .*\] \(1000 years\), "
    r"got -1",
)
def negative_time_config(files, mp):
    config = files.fewshot_config(hardware={"clock": {"training_age_s": -1}})
    yield ["fewshot", "train", "--out", str(files.root / "run"), "--config", str(config)]


@case(
    'a hardware setting beside the tree, config `{"update_rounding": "nearest"}`',
    r"few-shot config.model: hardware settings belong in the config's hardware tree: update_rounding -> "
    r"hardware.update.rounding",
)
def hardware_setting_beside_the_tree(files, mp):
    config = files.fewshot_config(update_rounding="nearest")
    yield ["fewshot", "train", "--out", str(files.root / "run"), "--config", str(config)]


@case('zero size, config `{"meta_batch": 0}`', r"meta_batch must be a positive integer, got 0")
def zero_meta_batch(files, mp):
    yield ["fewshot", "train", "--out", str(files.root / "run"), "--config", str(files.fewshot_config(meta_batch=0))]


@case('fractional size, config `{"channels": 8.5}`', r"few-shot config\.model\.channels: expected int, got float")
def fractional_channels(files, mp):
    yield ["fewshot", "train", "--out", str(files.root / "run"), "--config", str(files.fewshot_config(channels=8.5))]


@case('boolean for a count, config `{"ways": true}`', r"few-shot config\.model\.ways: expected int, got bool")
def boolean_ways(files, mp):
    yield ["fewshot", "train", "--out", str(files.root / "run"), "--config", str(files.fewshot_config(ways=True))]


@case('negative update budget, config `{"update_budget": -4}`', r"update_budget must be a non-negative integer, got -4")
def negative_update_budget(files, mp):
    config = files.fewshot_config(update_budget=-4)
    yield ["fewshot", "train", "--out", str(files.root / "run"), "--config", str(config)]


@case("negative update budget (CLI)", r"argument --update-budget: expected an integer >= 0, got '-1'")
def negative_update_budget_cli(files, mp):
    yield ["fewshot", "eval", "--update-budget", "-1", "--tasks", "2"]


@case('unknown schedule, config `{"outer_lr_schedule": "linear"}`', r"outer_lr_schedule must be 'constant' or 'cosine'")
def unknown_schedule(files, mp):
    config = files.fewshot_config(outer_lr_schedule="linear")
    yield ["fewshot", "train", "--out", str(files.root / "run"), "--config", str(config)]


@case('seed not an integer, config `{"seed": 1.5}`', r"few-shot config\.seed: expected int, got float")
def fractional_seed(files, mp):
    yield ["fewshot", "train", "--out", str(files.root / "run"), "--config", str(files.fewshot_config(seed=1.5))]


@case('zero rate, robot config `{"model": {"lr": 0}}`', r"RobotConfig\.lr must be a finite number > 0, got 0")
def zero_robot_lr(files, mp):
    config = files.robot_config(model={**SMALL_ROBOT_MODEL, "lr": 0})
    yield ["robot", "train", "--out", str(files.root / "run"), "--config", str(config)]


@case('zero size, robot config `{"model": {"trainee": {"n_rec": 0}}}`', r"TraineeConfig\.n_rec must be")
def zero_neurons(files, mp):
    config = files.robot_config(model={**SMALL_ROBOT_MODEL, "trainee": {"n_in": 5, "n_rec": 0}})
    yield ["robot", "train", "--out", str(files.root / "run"), "--config", str(config)]


@case(
    'unknown pre-training field, config `{"iteratons": 5}`',
    r"pretraining config: unknown PretrainConfig fields \['iteratons'\]",
)
def unknown_pretrain_field(files, mp):
    (files.root / "pre.json").write_text('{"iteratons": 5}')
    yield ["fewshot", "pretrain", "--out", str(files.root / "run"), "--config", str(files.root / "pre.json")]
    assert not (files.root / "run").exists()


@case('unknown field, config `{"wayz": 5}`', r"few-shot config.model: unknown MAMLConfig fields \['wayz'\]")
def unknown_field(files, mp):
    yield ["fewshot", "train", "--out", str(files.root / "run"), "--config", str(files.fewshot_config(wayz=5))]


@case("config file that is not JSON (`{ways: 5`)", r"config .*bad\.json is not valid JSON")
def config_not_json(files, mp):
    (files.root / "bad.json").write_text("{ways: 5")
    yield ["fewshot", "train", "--out", str(files.root / "run"), "--config", str(files.root / "bad.json")]


@case("config JSON that is not an object (`[5, 5]`)", r"must hold a JSON object of config fields, got list")
def config_list(files, mp):
    (files.root / "list.json").write_text("[5, 5]")
    yield ["robot", "train", "--out", str(files.root / "run"), "--config", str(files.root / "list.json")]


@case("config file missing", r"config file not found: .*missing\.json")
def config_missing(files, mp):
    yield ["robot", "train", "--out", str(files.root / "run"), "--config", str(files.root / "missing.json")]


# device constants
def robot_device(files: Files, **device) -> list[str]:
    config = files.robot_config(model={**SMALL_ROBOT_MODEL, "hardware": {"device": device}})
    return ["robot", "train", "--out", str(files.root / "run"), "--config", str(config)]


@case(
    'device constant out of range, robot config `{"model": {"hardware": {"device": {"g_max_uS": -25}}}}`',
    r"PCMDevice\.g_max_uS must be a finite number > 0, got -25",
)
def negative_gmax(files, mp):
    yield robot_device(files, g_max_uS=-25)


@case(
    'device constant out of range, `"device": {"g_max_uS": 5000}`',
    r"PCMDevice\.g_max_uS = 5000(\.0)? µS is not a PCM conductance",
)
def huge_gmax(files, mp):
    yield robot_device(files, g_max_uS=5000)


@case(
    'device constant out of range, `"device": {"t_read_s": 0}`',
    r"PCMDevice\.t_read_s must be a finite number > 0, got 0",
)
def zero_read_time(files, mp):
    yield robot_device(files, t_read_s=0)


@case(
    'device constant out of range, `"device": {"read_noise_scale": -1}`',
    r"PCMDevice\.read_noise_scale must be a finite number >= 0, got -1",
)
def negative_read_noise(files, mp):
    yield robot_device(files, read_noise_scale=-1)


@case(
    'device constant out of range, `"device": {"drift_mu_clip": [0.2, 0.1]}`',
    r"PCMDevice\.drift_mu_clip must be two numbers with 0 <= low <= high, got \(0\.2, 0\.1\)",
)
def reversed_clip(files, mp):
    yield robot_device(files, drift_mu_clip=[0.2, 0.1])


@case(
    'device constant of the wrong type, `"device": {"drift_mu_clip": ["a", "b"]}`',
    r"device\.drift_mu_clip\[0\]: expected float, got str",
)
def string_clip(files, mp):
    yield robot_device(files, drift_mu_clip=["a", "b"])


@case(
    'device constant of the wrong shape, `"device": {"prog_noise_coeffs_uS": 5}`',
    r"device\.prog_noise_coeffs_uS: expected array, got int",
)
def scalar_poly(files, mp):
    yield robot_device(files, prog_noise_coeffs_uS=5)


@case('device constant NaN, `"device": {"w_max": NaN}`', r"PCMDevice\.w_max must be a finite number > 0, got nan")
def nan_wmax(files, mp):
    yield robot_device(files, w_max=float("nan"))


# training
@case(
    "NaN loss at iteration 3 (train step monkeypatched)",
    r"training loss became nan at iteration 3; stopped, last good checkpoint .*\(iteration 2\)",
)
def nan_loss(files, mp):
    from l2l_pcm.robot import train as robot_train

    original, calls = robot_train.train_step, {"n": 0}

    def flaky(params, opt_state, targets, key, config):
        calls["n"] += 1
        params, opt_state, loss, aux = original(params, opt_state, targets, key, config)
        return params, opt_state, (loss * jnp.nan if calls["n"] == 3 else loss), aux

    mp.setattr(robot_train, "train_step", flaky)
    out = files.root / "nan_run"
    yield ["robot", "train", "--config", str(files.robot_config(iterations=4)), "--out", str(out), "--no-progress"]
    _, _, meta = robot_train.load_robot_checkpoint(out / "last.safetensors")
    assert meta["iteration"] == 2


@case(
    "a layer that does not fit the chip (trainee of 300 neurons)",
    r"layer 'trainee' \(305x300\) does not fit: the chip has 2 array\(s\) of 256x256 .* need 3",
)
def layer_too_big(files, mp):
    from l2l_pcm.checkpoint import save_checkpoint
    from l2l_pcm.robot.model import RobotConfig, init_params
    from l2l_pcm.robot.train import RobotTrainConfig

    model = RobotConfig(trainee=TraineeConfig(n_rec=300), lsg=LSGConfig(n_out=300), n_steps=20, smoothing_window=10)
    config = RobotTrainConfig(model=model)
    path = files.root / "big.safetensors"
    params = init_params(jax.random.PRNGKey(0), model)
    save_checkpoint(path, "robot-l2l", {"params": params}, {"config": config.to_json()})
    yield ["robot", "eval", "--checkpoint", str(path), "--backend", "chip", "--tasks", "2"]


# output
@case("--out below a regular file", r"cannot write to folder .*afile/run: Not a directory")
def out_below_file(files, mp):
    (files.root / "afile").write_text("x")
    yield ["robot", "train", "--config", str(files.robot_config()), "--out", str(files.root / "afile" / "run")]
    assert (files.root / "afile").read_text() == "x"


@case("--out on a read-only file system (/proc)", r"cannot write to folder /proc/l2l-pcm-run")
def out_on_proc(files, mp):
    yield ["robot", "train", "--config", str(files.robot_config()), "--out", "/proc/l2l-pcm-run"]


@case(
    "disk full while saving a checkpoint (`os.replace` raises ENOSPC)",
    r"cannot write .*last\.safetensors: No space left on device",
)
def disk_full(files, mp):
    from l2l_pcm import _io

    run = files.copy_of_robot_run("full_run")
    before = snapshot(run)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    mp.setattr(_io.os, "replace", full)
    yield [
        "robot",
        "train",
        "--config",
        str(files.robot_config(iterations=4)),
        "--out",
        str(run),
        "--resume",
        "--no-progress",
    ]
    assert snapshot(run) == before  # the last good checkpoint is intact and no temp file is left


@case("readout scale of zero (CLI)", r"argument --readout-scale: expected a finite number > 0, got '0'")
def readout_scale_zero(files, mp):
    yield ["fewshot", "eval", "--readout-scale", "0", "--tasks", "2"]


@case("export --set of a field the config does not have", r"unknown MAMLConfig fields \['readout_scal'\]")
def export_set_unknown_field(files, mp):
    destination = files.root / "exported.safetensors"
    yield ["export", str(files.fewshot_checkpoint()), str(destination), "--set", "model.readout_scal=0.35"]
    assert not destination.exists()


@case("export onto its own input", r"is also the input .*: refusing to write over what is being read")
def export_onto_itself(files, mp):
    source = files.root / "own.safetensors"
    shutil.copy(files.fewshot_checkpoint(), source)
    before = source.read_bytes()
    yield ["export", str(source), str(files.root / "." / "own.safetensors")]
    assert source.read_bytes() == before


@case("export over an existing file", r"exported.safetensors already exists; pass --overwrite to replace it")
def export_over_existing(files, mp):
    destination = files.root / "exported.safetensors"
    destination.write_bytes(b"keep me")
    yield ["export", str(files.fewshot_checkpoint()), str(destination)]
    assert destination.read_bytes() == b"keep me"


@case(
    "export --set of a model size the tensors do not have",
    r"the exported copy would not load, so it is not written: .*exported.safetensors: tensor .* has shape",
)
def export_set_other_model_size(files, mp):
    destination = files.root / "exported.safetensors"
    yield ["export", str(files.fewshot_checkpoint()), str(destination), "--set", "model.channels=16"]
    assert not destination.exists() and not list(files.root.glob(".*checking"))


@case("import-authors onto its own source", r"is also the input .*: refusing to write over what is being read")
def import_authors_onto_itself(files, mp):
    source = files.root / "weights.pickle"
    source.write_bytes(b"not really a pickle")
    yield ["import-authors", "robot", str(source), str(source)]
    assert source.read_bytes() == b"not really a pickle"


@case(
    "export --set of a path that is not in the hardware tree",
    r"--set model.hardware.forwrd.dac_bits: .forwrd. is not a section of the checkpoint.s config",
)
def export_set_unknown_section(files, mp):
    destination = files.root / "exported.safetensors"
    yield ["export", str(files.fewshot_checkpoint()), str(destination), "--set", "model.hardware.forwrd.dac_bits=8"]
    assert not destination.exists()


@case("export --set of a hardware value of the wrong type", r"hardware.forward.dac_bits: expected int \| null, got str")
def export_set_hardware_wrong_type(files, mp):
    destination = files.root / "exported.safetensors"
    yield ["export", str(files.fewshot_checkpoint()), str(destination), "--set", "model.hardware.forward.dac_bits=x"]
    assert not destination.exists()


@case("export --set of an impossible value", r"readout_scale must be a finite number > 0, got -1")
def export_set_bad_value(files, mp):
    destination = files.root / "exported.safetensors"
    yield ["export", str(files.fewshot_checkpoint()), str(destination), "--set", "model.readout_scale=-1"]
    assert not destination.exists()


@case("export to a path below a regular file", r"cannot write to folder .*afile: Not a directory")
def export_below_file(files, mp):
    (files.root / "afile").write_text("x")
    yield ["export", str(files.robot_run() / "last.safetensors"), str(files.root / "afile" / "out.safetensors")]


# ------------------------------------------------------------------------------------ import-authors
class _System:
    """Pickles as a call of os.system: a file that tries to run a shell command when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"__import__('os').system('touch {self.marker}')",))


def _malicious_import(files, payload) -> Iterator[list[str]]:
    import pickle

    marker, destination = files.root / "pwned", files.root / "out.safetensors"
    source = files.root / "evil.pickle"
    source.write_bytes(pickle.dumps([payload(marker)]))
    yield ["import-authors", "fewshot", str(source), str(destination)]
    assert not marker.exists() and not destination.exists()  # nothing ran, nothing written


@case("import-authors: a pickle that calls os.system", r"evil\.pickle: refusing global '(posix|os|nt)\.system'")
def import_os_system(files, mp):
    yield from _malicious_import(files, _System)


@case("import-authors: a pickle that calls eval", r"evil\.pickle: refusing global 'builtins\.eval'")
def import_eval(files, mp):
    yield from _malicious_import(files, _Eval)


@case("import-authors: truncated pickle", r"half\.pickle: not a pickle, or truncated")
def import_truncated(files, mp):
    source = AUTHORS / "robot_pretrained-weights.pickle"
    if not source.is_file():
        pytest.skip("the authors' checkpoints are not beside the repository")
    half = files.root / "half.pickle"
    half.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    yield ["import-authors", "robot", str(half), str(files.root / "out.safetensors")]
    assert not (files.root / "out.safetensors").exists()


@case("import-authors: the robot pickle imported as few-shot", r"is not the authors' few-shot checkpoint format")
def import_wrong_scenario(files, mp):
    source = AUTHORS / "robot_pretrained-weights.pickle"
    if not source.is_file():
        pytest.skip("the authors' checkpoints are not beside the repository")
    yield ["import-authors", "fewshot", str(source), str(files.root / "out.safetensors")]
    assert not (files.root / "out.safetensors").exists()


@case("import-authors: arrays of unexpected shapes", r"variable 'conv3' has shape \(3, 3, 8, 9\), expected")
def import_wrong_shapes(files, mp):
    import pickle

    arrays = [np.zeros((3, 3, 1, 8)), np.zeros((3, 3, 8, 8)), np.zeros((3, 3, 8, 9)), np.zeros((3, 3, 8, 8))]
    source = files.root / "shape.pickle"
    source.write_bytes(pickle.dumps([*arrays, np.zeros((8, 5))], protocol=4))
    yield ["import-authors", "fewshot", str(source), str(files.root / "out.safetensors")]
    assert not (files.root / "out.safetensors").exists()


@case("--device that is neither a profile nor a JSON file", r"--device: 'sram' is neither a profile")
def unknown_device(files, mp):
    yield ["chip", "stats", "--device", "sram", "--samples", "10"]


@case(
    "--time-since-programming with a fixed-age device (authors profile)",
    r"this device reads every device at a fixed age of 32 s",
)
def fixed_age_time(files, mp):
    yield [
        "robot",
        "eval",
        "--checkpoint",
        str(files.robot_run() / "best.safetensors"),
        "--device",
        "authors",
        "--time-since-programming",
        "3600",
        "--tasks",
        "2",
    ]


@case(
    "a time sweep with a fixed-age device (authors profile)",
    r"reads every device at a fixed age of 32 s .*a sweep over time since programming cannot apply",
)
def fixed_age_sweep(files, mp):
    yield ["robot", "sweep", "--devices", "authors", "--times", "1s,1h", "--tasks", "2", "--out", str(files.root)]


@case("a sweep list with a bad value", r"argument --times: expected a duration >= 0")
def bad_sweep_list(files, mp):
    yield ["robot", "sweep", "--times", "1s,soon", "--tasks", "2", "--out", str(files.root)]


@case("train --out into a finished run without --resume", r"already holds a training run .*or pass --overwrite")
def overwrite_refused(files, mp):
    run = files.copy_of_robot_run("finished")
    before = snapshot(run)
    yield ["robot", "train", "--config", str(files.robot_config()), "--out", str(run), "--no-progress"]
    assert snapshot(run) == before


@case("--resume where no checkpoint exists (mistyped --out)", r"--resume: no checkpoint to continue in .*typo")
def resume_nothing(files, mp):
    yield ["robot", "train", "--config", str(files.robot_config()), "--out", str(files.root / "typo"), "--resume"]
    assert not (files.root / "typo" / "last.safetensors").exists()


@case("--precision with --backend chip", r"--precision applies to the software backend only")
def precision_on_chip(files, mp):
    yield ["robot", "eval", "--checkpoint", str(files.robot_run() / "best.safetensors"), "--backend", "chip",
           "--precision", "fp32", "--tasks", "2"]  # fmt: skip


@case("--drift-compensation with --backend software", r"--drift-compensation applies to the chip only")
def drift_compensation_in_software(files, mp):
    yield ["robot", "eval", "--checkpoint", str(files.robot_run() / "best.safetensors"), "--backend", "software",
           "--drift-compensation", "--tasks", "2"]  # fmt: skip


@case("--time-since-programming with an unknown unit", r"expected a duration >= 0 .*got '1fortnight'")
def bad_time_unit(files, mp):
    yield ["robot", "eval", "--time-since-programming", "1fortnight"]


@case("a PyTorch .pt file as checkpoint", r"model\.pt is not a safetensors file \(l2l-pcm checkpoints are; a PyTorch")
def pytorch_checkpoint(files, mp):
    import zipfile

    with zipfile.ZipFile(files.root / "model.pt", "w") as archive:  # what torch.save writes: a zip
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    yield ["robot", "eval", "--checkpoint", str(files.root / "model.pt"), "--tasks", "2"]


@case(
    "robot checkpoint of format 1 (the old arm and target code)",
    r"robot checkpoint of format 1 .*evaluated on another task: retrain it",
)
def robot_format_one(files, mp):
    from l2l_pcm import _io

    tensors, metadata = _io.load_tensors(files.robot_run() / "best.safetensors")
    del metadata["format_version"]
    _io.save_tensors(files.root / "old.safetensors", tensors, metadata)
    yield ["robot", "eval", "--checkpoint", str(files.root / "old.safetensors"), "--tasks", "2"]


@case("checkpoint from a newer l2l-pcm (format 99)", r"has checkpoint format 99, this l2l-pcm reads up to \d+")
def newer_format(files, mp):
    from l2l_pcm import _io

    tensors, metadata = _io.load_tensors(files.robot_run() / "best.safetensors")
    _io.save_tensors(files.root / "new.safetensors", tensors, {**metadata, "format_version": 99})
    yield ["robot", "eval", "--checkpoint", str(files.root / "new.safetensors"), "--tasks", "2"]


@case("more shots than an Omniglot class allows", r"--shots 6 with --queries 15: an Omniglot class has 20 drawings")
def too_many_shots(files, mp):
    yield ["fewshot", "eval", "--shots", "6", "--tasks", "2"]


@case("ways other than the readout's", r"ways=10 but the checkpoint's readout has 5 outputs", needs_data=True)
def ways_not_the_readouts(files, mp):
    yield ["fewshot", "eval", "--ways", "10", "--tasks", "2"]


@case("4-bit precision for the robot", r"precision '4bit': the robot scenario has no 4-bit model")
def robot_four_bit(files, mp):
    yield ["robot", "eval", "--backend", "software", "--precision", "4bit", "--tasks", "2"]


@case("unknown option of a subcommand", r"unrecognized arguments: --bogus 1 \(see 'l2l-pcm fewshot eval --help'\)")
def unknown_subcommand_option(files, mp):
    yield ["fewshot", "eval", "--bogus", "1"]


@case(
    "chip-only hardware setting with the software backend",
    r"hardware.forward.adc_bits applies to the chip only .* evaluate on the chip, or keep the model's \(None\)",
    needs_data=True,
)
def hardware_adc_on_software(files, mp):
    (files.root / "hw.json").write_text('{"forward": {"adc_bits": 8}}')
    hardware = str(files.root / "hw.json")
    yield ["fewshot", "eval", "--backend", "software", "--precision", "pcm", "--hardware", hardware, "--tasks", "2"]


@case("unknown hardware field", r"hw.json.forward: unknown ForwardConfig fields \['adc_bitz'\] \(did you mean")
def unknown_hardware_field(files, mp):
    (files.root / "hw.json").write_text('{"forward": {"adc_bitz": 8}}')
    yield ["robot", "eval", "--hardware", str(files.root / "hw.json"), "--tasks", "2"]


@case("hardware field of the wrong type", r"hw.json.update.step: expected float, got str")
def hardware_field_wrong_type(files, mp):
    (files.root / "hw.json").write_text('{"update": {"step": "x"}}')
    yield ["robot", "eval", "--hardware", str(files.root / "hw.json"), "--tasks", "2"]


@case(
    "hardware file of the flat format",
    r"settings of the flat hardware config given; their homes in the tree: dac_bits -> forward.dac_bits",
)
def hardware_flat_file(files, mp):
    (files.root / "hw.json").write_text('{"dac_bits": 8}')
    yield ["robot", "eval", "--hardware", str(files.root / "hw.json"), "--tasks", "2"]


@case("hardware section of the wrong type", r"hw.json.energy: expected object, got int")
def hardware_energy_not_an_object(files, mp):
    (files.root / "hw.json").write_text('{"energy": 5}')
    yield ["robot", "eval", "--hardware", str(files.root / "hw.json"), "--tasks", "2"]


@case("robot config whose model is not an object", r"robot config.model: expected object, got str")
def robot_model_not_an_object(files, mp):
    (files.root / "cfg.json").write_text('{"model": "xy"}')
    yield ["robot", "train", "--out", str(files.root / "run"), "--config", str(files.root / "cfg.json")]
    assert not (files.root / "run").exists()


@case(
    "device given inside and outside the hardware config",
    r"few-shot config.model: hardware settings belong in the config's hardware tree: device -> hardware.device",
)
def device_twice(files, mp):
    (files.root / "cfg.json").write_text('{"model": {"device": "ibm", "hardware": {"device": "authors"}}}')
    yield ["fewshot", "train", "--out", str(files.root / "run"), "--config", str(files.root / "cfg.json")]
    assert not (files.root / "run").exists()


# few-shot methods, baselines, NIR export
@case("a method with a setting it cannot honour (protonet with 4 inner steps)", r"'protonet' .* inner_steps must be 1")
def protonet_inner_steps(files, mp):
    config = files.fewshot_config(method="protonet", learn_initial_readout=False)
    yield ["fewshot", "train", "--out", str(files.root / "run"), "--config", str(config)]
    assert not (files.root / "run").exists()


@case("meta-training the finetune method (it is pre-trained)", r"'finetune' is not meta-trained.*fewshot pretrain")
def finetune_meta_training(files, mp):
    config = files.fewshot_config(method="finetune", learn_initial_readout=False)
    yield ["fewshot", "train", "--out", str(files.root / "run"), "--config", str(config)]
    assert not (files.root / "run").exists()


@case("baselines: a checkpoint given for another method", r"is a 'maml_head' learner, given for method 'protonet'")
def baselines_wrong_method(files, mp):
    checkpoint = files.fewshot_checkpoint()
    yield ["fewshot", "baselines", "--methods", "protonet", "--learner", f"protonet={checkpoint}", "--tasks", "2"]


@case("baselines: an unknown method", r"unknown method\(s\) \['reptile'\]")
def baselines_unknown_method(files, mp):
    yield ["fewshot", "baselines", "--methods", "reptile", "--tasks", "2"]


@case("baselines: a learner checkpoint that does not exist", r"learner checkpoint\(s\) not found: .*nothing")
def baselines_missing_learner(files, mp):
    yield ["fewshot", "baselines", "--methods", "maml", "--learner", f"maml={files.root / 'nothing'}", "--tasks", "2"]


@case("NIR export over a file already there", r"out\.nir exists; pass overwrite")
def nir_export_exists(files, mp):
    (files.root / "out.nir").write_bytes(b"keep me")
    yield ["robot", "export-nir", str(files.robot_run() / "last.safetensors"), str(files.root / "out.nir")]
    assert (files.root / "out.nir").read_bytes() == b"keep me"


@case("NIR export of a few-shot checkpoint", r"holds a 'fewshot-maml' checkpoint, expected 'robot-l2l'")
def nir_export_fewshot(files, mp):
    yield ["robot", "export-nir", str(files.fewshot_checkpoint()), str(files.root / "out.nir")]
    assert not (files.root / "out.nir").exists()


def run_case(name: str, root: Path) -> tuple[list[str], str]:
    """Run one case in ``root``; returns its command line and error line (after checking both)."""
    description, expect, fn, needs_data = CASES[name]
    root.mkdir(parents=True, exist_ok=True)
    files = Files(root)
    with pytest.MonkeyPatch.context() as mp:
        steps = fn(files, mp)
        argv = next(steps)
        code, stderr = run_cli(argv)
        assert code == 2, (code, stderr)
        line = error_line(stderr)
        assert re.search(expect, line), line
        next(steps, None)  # checks that nothing saved before was lost
    return argv, line


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_clean_error_line(name, tmp_path):
    if CASES[name][3] and shared_data() is None:
        pytest.skip("needs the shared Omniglot copy")
    run_case(name, tmp_path)


# ----------------------------------------------------------------------------------- property tests
class Reached(BaseException):  # not an Exception: the CLI turns those into "internal error" lines
    """Raised by a stubbed heavy function: the command line was accepted."""


ANY_TEXT = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["", "1e400", "-0", "0x10", "nan", "inf", "1_000", " 3", "三"]),
    st.text(max_size=6),
)
JSON_NUMBER = st.one_of(
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.lists(st.integers(-3, 3), max_size=3),
)


def outcome(argv: list[str]):
    """The arguments the stubbed heavy function was called with (the command line was accepted: the caller
    checks they are the values given), or "error" for a clean one-line error; fails otherwise."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except Reached as reached:
            return reached.args
        except SystemExit as exc:
            code = exc.code
    assert code == 2, (argv, code, err.getvalue())
    line = error_line(err.getvalue())
    assert len(line) < 400, line
    return "error"


def stub(*args, **kwargs):
    raise Reached(*args, *kwargs.values())


def same_value(got, given) -> bool:
    """An accepted value arrived unchanged: equal, and neither a bool nor a string where the other was not
    (``true`` is no count, ``"3"`` no number); JSON lists arrive as tuples."""
    if isinstance(given, list):
        given = tuple(given)
    return (
        got == given
        and isinstance(got, bool) == isinstance(given, bool)
        and isinstance(got, str) == isinstance(given, str)
    )


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(samples=ANY_TEXT, seed=ANY_TEXT)
def test_chip_stats_values(samples, seed):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("l2l_pcm.chip.diagnostics.device_statistics", stub)
        outcome(["chip", "stats", "--samples", samples, "--seed", seed])


@SETTINGS
@given(batch=ANY_TEXT, iterations=ANY_TEXT, seed=ANY_TEXT)
def test_robot_train_values(batch, iterations, seed):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("l2l_pcm.robot.train.train", stub)
        called = outcome(
            ["robot", "train", "--out", "unused", "--batch", batch, "--iterations", iterations, "--seed", seed]
        )
    if called != "error":  # accepted: the run gets exactly these values
        config = called[0]
        assert (config.model.batch, config.iterations, config.seed) == (int(batch), int(iterations), int(seed))


@SETTINGS
@given(tasks=ANY_TEXT, queries=ANY_TEXT, time=ANY_TEXT)
@example(tasks="2", queries="1", time="0")  # accepted: the chip must be used at age 0
def test_fewshot_eval_values(tasks, queries, time):
    """Values reach the library's own checks (the task sampler) with the data loading stubbed out."""
    from l2l_pcm.fewshot.omniglot import OmniglotImages

    images = OmniglotImages(np.zeros((6, 20, 28, 28), np.float32), [f"a/character{i:02d}" for i in range(6)], ["a"] * 6)
    params = fewshot_init(jax.random.PRNGKey(0), TINY_FEWSHOT.cnn)
    with pytest.MonkeyPatch.context() as mp:
        # the loaders stubbed, not _load_fewshot: it is where the flags reach the config
        mp.setattr("l2l_pcm.fewshot.train.load_learner", lambda path: (params, TINY_FEWSHOT, {}))
        mp.setattr("l2l_pcm.fewshot.omniglot.load_omniglot", lambda split, data_dir=None: images)
        mp.setattr("l2l_pcm.fewshot.evaluate.evaluate_batch", stub)
        mp.setattr("l2l_pcm.fewshot.evaluate.ChipFewShotLearner", stub)
        argv = ["fewshot", "eval", "--tasks", tasks, "--queries", queries, "--time-since-programming", time]
        assert outcome(argv + ["--backend", "software"]) == "error"  # the time is the chip's: refused
        called = outcome(argv + ["--backend", "chip"])
    if called != "error":  # accepted: the chip is used at exactly that age
        from l2l_pcm.cli.common import seconds_arg

        config = called[1]
        assert config.hardware.clock.deployment_age_s == seconds_arg(time) and int(tasks) >= 2


FEWSHOT_FIELDS = [field.name for field in dataclasses.fields(MAMLConfig)]
ROBOT_MODEL_FIELDS = ["n_steps", "batch", "eta", "lr", "lr_decay", "reg_lambda"]
DEVICE_FIELDS = ["g_max_uS", "w_max", "t0_s", "t_read_s", "drift_scale", "drift_mu_clip", "prog_noise_coeffs_uS"]
HARDWARE_FIELDS = ["step", "seconds_between", "training_age_s", "deployment_age_s", "drift_compensation"]


@SETTINGS
@given(field=st.sampled_from(FEWSHOT_FIELDS), value=JSON_NUMBER)
def test_fewshot_config_values(tmp_path, field, value):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": {field: value}}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("l2l_pcm.fewshot.train.train", stub)
        called = outcome(["fewshot", "train", "--out", str(tmp_path / "run"), "--config", str(path)])
    if called != "error":  # accepted: the run's model config holds exactly that value
        got = getattr(called[0].model, field)
        assert same_value(got, value), (field, value, got)


@SETTINGS
@given(
    where=st.sampled_from(["run", "model", "hardware", "device", "update", "clock"]),
    field=st.sampled_from(
        ["iterations", "validate_every", "seed"] + ROBOT_MODEL_FIELDS + DEVICE_FIELDS + HARDWARE_FIELDS
    ),
    value=JSON_NUMBER,
)
def test_robot_config_values(tmp_path, where, field, value):
    data = {"model": {"hardware": {"device": {}, "update": {}, "clock": {}}}}
    hardware = data["model"]["hardware"]
    target = {"run": data, "model": data["model"], "hardware": hardware, **hardware}[where]
    target[field] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("l2l_pcm.robot.train.train", stub)
        called = outcome(["robot", "train", "--out", str(tmp_path / "run"), "--config", str(path)])
    if called != "error":  # accepted: the run's config holds exactly that value where it was given
        config = called[0]
        held = {"run": config, "model": config.model, "hardware": config.model.hardware}.get(where)
        held = getattr(config.model.hardware, where) if held is None else held
        assert same_value(getattr(held, field), value), (where, field, value, getattr(held, field))


HARDWARE_PATHS = [
    ("arrays", "count"),
    ("forward", "dac_bits"),
    ("forward", "adc_range"),
    ("forward", "read_noise_mode"),
    ("update", "step"),
    ("update", "rounding"),
    ("update", "seconds_between"),
    ("clock", "training_age_s"),
    ("clock", "deployment_age_s"),
    (None, "drift_compensation"),
]


@SETTINGS
@given(where=st.sampled_from(HARDWARE_PATHS), value=JSON_NUMBER | st.sampled_from(["nearest", "per_batch", "array"]))
def test_an_accepted_hardware_value_is_the_value_the_chip_uses(where, value):
    """Refused, or taken exactly: a hardware JSON value the parser accepts comes back unchanged from the tree,
    from a chip built on it and from a JSON round trip (no coercion: 1.0 is no arrays count, true no bits)."""
    from l2l_pcm.chip import Chip, ChipConfig
    from l2l_pcm.errors import ConfigError

    section, field = where
    data = {field: value} if section is None else {section: {field: value}}
    try:
        config = ChipConfig.from_json(data)
    except ConfigError:
        return
    held = config if section is None else getattr(config, section)
    got = getattr(held, field)
    assert (
        got == value
        and isinstance(got, bool) == isinstance(value, bool)
        and isinstance(got, str) == isinstance(value, str)
    )
    assert ChipConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    assert Chip(config).config == config
