"""Write a copy of a robot checkpoint whose deployment hardware has some fields changed (same weights).

The shipped robot model was meta-trained at 1 h after programming; deployed with the chip's calibrated
drift compensation it works at any age (README, "Deployment over time"), so it ships with it:

    python scripts/set_deployment_hardware.py src/l2l_pcm/checkpoints/robot_scorbot.safetensors \\
        src/l2l_pcm/checkpoints/robot_scorbot.safetensors drift_compensation=array

Fields are ``ChipConfig`` fields given as ``name=value`` (numbers, true/false, null, or strings).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from l2l_pcm.checkpoint import save_checkpoint
from l2l_pcm.robot.train import CHECKPOINT_KIND, load_robot_checkpoint


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source")
    parser.add_argument("destination")
    parser.add_argument("changes", nargs="+", metavar="FIELD=VALUE")
    args = parser.parse_args()
    changes = dict(change.split("=", 1) for change in args.changes)
    params, config, metadata = load_robot_checkpoint(Path(args.source))
    model = config.model.with_hardware(**{name: parse_value(value) for name, value in changes.items()})
    config = dataclasses.replace(config, model=model)
    kept = {k: v for k, v in metadata.items() if k not in ("config", "kind", "format_version")}
    history = [*kept.get("deployment_changes", []), changes]
    path = save_checkpoint(
        args.destination,
        CHECKPOINT_KIND,
        {"params": params},
        {**kept, "config": config.to_json(), "deployment_changes": history},
    )
    print(f"wrote {path} (hardware: {json.dumps(changes)})")


if __name__ == "__main__":
    main()
