"""Side-by-side robot table: the authors' imported model and this project's models on the same trajectories.

Every row is ``l2l_pcm.robot.evaluate.evaluate`` on the same test trajectories (``--tasks``, ``--seed``);
rows differ only in the checkpoint and the conventions they are evaluated under, which the table states.

    python scripts/robot_fidelity.py --authors runs/authors/robot.safetensors \\
        --ours src/l2l_pcm/checkpoints/robot_scorbot.safetensors \\
        --ours-authors-profile runs/robot_authors_profile/best.safetensors --out outputs/robot_fidelity.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from l2l_pcm._io import atomic_write_text
from l2l_pcm.pcm import profile_name
from l2l_pcm.robot.evaluate import evaluate
from l2l_pcm.robot.model import ROBOT_HARDWARE
from l2l_pcm.robot.train import load_robot_checkpoint


def _row(label: str, params, model, backend: str, precision: str, tasks: int, seed: int) -> dict:
    result = evaluate(params, model, backend, tasks, seed, precision)
    conventions = (
        f"{profile_name(model.device)} profile, W_out {'PCM' if model.w_out_on_pcm else 'digital'}, "
        f"code {model.xyz_code}, angles {'clipped' if model.clip_predicted_angles else 'not clipped'}"
    )
    print(
        f"| {label} | {backend} ({result['precision']}) | {conventions} | {result['mse_before']:.4f} ± "
        f"{result['mse_before_ci95']:.4f} | {result['mse_after']:.4f} ± {result['mse_after_ci95']:.4f} | "
        f"{result['mse_ratio_after_to_before']:.3f} |",
        flush=True,
    )
    return {"label": label, "conventions": conventions, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", required=True, help="the imported authors' robot checkpoint")
    parser.add_argument("--ours", required=True, help="this project's model (ibm profile)")
    parser.add_argument("--ours-authors-profile", help="this project's model meta-trained with the authors profile")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/robot_fidelity.json")
    args = parser.parse_args()

    print("| model | backend | evaluated under | MSE before (m²) | MSE after | after/before |")
    print("|---|---|---|---|---|---|")
    rows = []
    authors_params, authors_config, _ = load_robot_checkpoint(args.authors)
    theirs = authors_config.model
    for backend, precision in (("software", "trained"), ("software", "fp32"), ("chip", "trained")):
        rows.append(_row("authors' model", authors_params, theirs, backend, precision, args.tasks, args.seed))
    # the authors' weights under this project's defaults ("ibm" device, digital W_out, clipped predicted angles)
    defaults = dataclasses.replace(
        theirs, hardware=ROBOT_HARDWARE.with_settings({"device": "ibm"}), w_out_on_pcm=False,
        clip_predicted_angles=True,
    )  # fmt: skip
    for backend in ("software", "chip"):
        rows.append(_row("authors' model", authors_params, defaults, backend, "trained", args.tasks, args.seed))
    ours_params, ours_config, _ = load_robot_checkpoint(args.ours)
    for backend in ("software", "chip"):
        rows.append(_row("ours (ibm)", ours_params, ours_config.model, backend, "trained", args.tasks, args.seed))
    if args.ours_authors_profile:
        params, config, _ = load_robot_checkpoint(args.ours_authors_profile)
        for backend in ("software", "chip"):
            rows.append(_row("ours (authors profile)", params, config.model, backend, "trained", args.tasks, args.seed))
    atomic_write_text(Path(args.out), json.dumps(rows, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
