"""A training process killed with SIGKILL leaves only complete files, and --resume ends where an
uninterrupted run ends (robot scenario: small networks, no data set needed, deterministic on CPU)."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_robot_eval import small_robot

from l2l_pcm.cli import main
from l2l_pcm.robot.train import RobotTrainConfig, load_robot_checkpoint, train
from l2l_pcm.training import LOCK

CONFIG = RobotTrainConfig(
    model=small_robot(batch=2), iterations=30, validate_every=10, validation_tasks=3, checkpoint_every=1
)
STALE = re.compile(r"^\.(last\.safetensors|best\.safetensors|metrics\.csv|metrics\.json)\..+\.tmp$")


def start_and_kill(out, config_path) -> int:
    """Start ``l2l-pcm robot train``, SIGKILL it as soon as its first checkpoint exists; returns its exit code."""
    command = [sys.executable, "-m", "l2l_pcm.cli", "robot", "train", "--config", str(config_path)]
    process = subprocess.Popen(
        command + ["--out", str(out), "--no-progress"],
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    try:
        while not (out / "last.safetensors").exists():
            assert process.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sigkill_leaves_complete_files_and_resume_matches_an_uninterrupted_run(tmp_path):
    config_path = tmp_path / "robot.json"
    config_path.write_text(json.dumps(CONFIG.to_json()))
    killed = tmp_path / "killed"
    assert start_and_kill(killed, config_path) == -signal.SIGKILL

    # every file is complete: loadable checkpoints, parseable metrics; anything else is a writer's temp file
    files = {path.name for path in killed.iterdir()}
    assert "last.safetensors" in files
    _, config, meta = load_robot_checkpoint(killed / "last.safetensors")
    assert config == CONFIG and 1 <= meta["iteration"] < CONFIG.iterations
    if "best.safetensors" in files:
        load_robot_checkpoint(killed / "best.safetensors")
    if "metrics.json" in files:
        rows = json.loads((killed / "metrics.json").read_text())
        assert [row["iteration"] for row in rows] == [10, 20][: len(rows)]
    if "metrics.csv" in files:
        assert list(csv.DictReader((killed / "metrics.csv").open()))
    # the run folder's lock (and its holder note) stay on disk; the OS released the lock itself
    expected = {"last.safetensors", "best.safetensors", "metrics.json", "metrics.csv", LOCK, f"{LOCK}.owner"}
    leftovers = files - expected
    assert all(STALE.match(name) for name in leftovers), leftovers

    # what a kill in the middle of a write leaves: a temp file, removed when the run resumes
    stale = killed / ".last.safetensors.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert (
        main(["robot", "train", "--config", str(config_path), "--out", str(killed), "--resume", "--no-progress"]) == 0
    )
    assert not [path for path in killed.iterdir() if STALE.match(path.name)]

    train(CONFIG, tmp_path / "straight", progress=False)
    resumed, _, meta = load_robot_checkpoint(killed / "last.safetensors")
    straight, _, _ = load_robot_checkpoint(tmp_path / "straight" / "last.safetensors")
    assert meta["iteration"] == CONFIG.iterations
    for name in straight:
        np.testing.assert_allclose(resumed[name], straight[name], rtol=1e-5, atol=1e-6, err_msg=name)
    rows = json.loads((killed / "metrics.json").read_text())
    assert [row["iteration"] for row in rows] == [10, 20, 30]


@pytest.mark.slow  # 35 s end to end; SIGKILL-and-resume and the two-process SIGTERM test run by default
def test_sigint_saves_the_current_iteration_and_resume_continues_from_it(tmp_path):
    """Ctrl-C / SIGTERM: a checkpoint at the iteration reached, a message naming it, --resume from there."""
    config = RobotTrainConfig(
        model=small_robot(batch=2), iterations=400, validate_every=1, validation_tasks=2, checkpoint_every=1000
    )
    config_path = tmp_path / "robot.json"
    config_path.write_text(json.dumps(config.to_json()))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "l2l_pcm.cli", "robot", "train", "--config", str(config_path), "--out", str(out)]
    process = subprocess.Popen(
        command + ["--no-progress"],
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    try:
        while not (out / "best.safetensors").exists():  # the loop runs (validation after iteration 1)
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    stopped = int(re.search(r"stopped at iteration (\d+); continue with --resume", stderr).group(1))
    assert 1 <= stopped < 400
    _, _, meta = load_robot_checkpoint(out / "last.safetensors")
    assert meta["iteration"] == stopped  # checkpoint_every=1000: this file was written by the stop
    finished = subprocess.run(
        [sys.executable, "-m", "l2l_pcm.cli", "robot", "train", "--config", str(config_path), "--out", str(out),
         "--resume", "--iterations", str(stopped + 2), "--no-progress"],
        env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout.splitlines()[-1])["resumed_from_iteration"] == stopped
    assert load_robot_checkpoint(out / "last.safetensors")[2]["iteration"] == stopped + 2


def test_a_finished_run_is_not_overwritten_and_resume_needs_a_checkpoint(tmp_path):
    config_path = tmp_path / "robot.json"
    config = RobotTrainConfig(model=small_robot(batch=2), iterations=1, validate_every=1, validation_tasks=2)
    config_path.write_text(json.dumps(config.to_json()))
    out = tmp_path / "run"
    base = ["robot", "train", "--config", str(config_path), "--out", str(out), "--no-progress"]
    assert main(base) == 0
    before = (out / "last.safetensors").read_bytes()
    assert main(base) == 2  # refused: would replace the finished run
    assert (out / "last.safetensors").read_bytes() == before
    assert main([*base, "--overwrite"]) == 0
    assert main(["robot", "train", "--config", str(config_path), "--out", str(tmp_path / "typo"), "--resume"]) == 2
    assert not (tmp_path / "typo" / "last.safetensors").exists()
