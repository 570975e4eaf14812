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
from test_robot_eval import small_robot

from l2l_pcm.cli import main
from l2l_pcm.robot.train import RobotTrainConfig, load_robot_checkpoint, train

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
    leftovers = files - {"last.safetensors", "best.safetensors", "metrics.json", "metrics.csv"}
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
