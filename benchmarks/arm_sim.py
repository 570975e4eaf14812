"""The simulated Scorbot's speed: physics steps per second of batched MJX rollouts, and a 200-task robot
evaluation on the chip with the executed (MuJoCo) path against the same evaluation with the closed-form
kinematics, in one process (the ratio is what to compare across machines).

    pip install -e ".[sim]"
    python benchmarks/arm_sim.py [--tasks 200] [--repeats 2]

Ends with ``key: value`` lines.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax

import l2l_pcm
from l2l_pcm.robot.evaluate import evaluate, test_trajectories
from l2l_pcm.robot.sim import ScorbotMJX
from l2l_pcm.robot.train import load_robot_checkpoint

CHECKPOINT = Path(l2l_pcm.__file__).parent / "checkpoints" / "robot_scorbot.safetensors"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    params, config, _ = load_robot_checkpoint(CHECKPOINT)
    model = config.model
    arm_sim = ScorbotMJX(model.arm_model, tick_s=model.velocity_dt_s)
    targets = test_trajectories(model, args.tasks, 0)
    jax.block_until_ready(arm_sim.execute(targets.angular_velocity).xyz)  # compile
    start = time.perf_counter()
    for _ in range(args.repeats):
        jax.block_until_ready(arm_sim.execute(targets.angular_velocity).xyz)
    rollout_s = (time.perf_counter() - start) / args.repeats
    steps = args.tasks * model.n_steps * arm_sim.substeps
    timings = {"kinematic": [], "mujoco": []}
    for sim in (None, arm_sim):  # compile both first
        evaluate(params, model, "chip", args.tasks, 0, arm_sim=sim)
    for _ in range(args.repeats):  # interleaved: the same load on both
        for name, sim in (("kinematic", None), ("mujoco", arm_sim)):
            start = time.perf_counter()
            evaluate(params, model, "chip", args.tasks, 0, arm_sim=sim)
            timings[name].append(time.perf_counter() - start)
    results = {
        "rollout_batch": args.tasks,
        "rollout_s": round(rollout_s, 3),
        "sim_steps_per_s": round(steps / rollout_s),
        "eval_kinematic_s": round(min(timings["kinematic"]), 2),
        "eval_mujoco_s": round(min(timings["mujoco"]), 2),
        "eval_ratio": round(min(timings["mujoco"]) / min(timings["kinematic"]), 2),
    }
    for key, value in results.items():
        print(f"{key}: {value}")
    return results


if __name__ == "__main__":
    main()
