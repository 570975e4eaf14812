"""Sweeps (l2l_pcm.sweep, ``l2l-pcm fewshot sweep`` / ``robot sweep``)."""

import csv
import json

import jax
import pytest
from conftest import SHARED, figure_text, needs_shared
from test_fewshot import TINY

from l2l_pcm import sweep
from l2l_pcm.cli import main
from l2l_pcm.errors import ConfigError
from l2l_pcm.fewshot.model import init_params
from l2l_pcm.fewshot.train import save_fewshot_checkpoint


def test_grid_is_the_product_in_order():
    points = sweep.grid({"time_since_programming_s": [1.0, 60.0], "drift_compensation": ["none", "array"]})
    assert points == [
        {"time_since_programming_s": 1.0, "drift_compensation": "none"},
        {"time_since_programming_s": 1.0, "drift_compensation": "array"},
        {"time_since_programming_s": 60.0, "drift_compensation": "none"},
        {"time_since_programming_s": 60.0, "drift_compensation": "array"},
    ]
    with pytest.raises(ConfigError, match="'update_budget' has no values"):
        sweep.grid({"time_since_programming_s": [1.0], "update_budget": []})


@needs_shared
def test_fewshot_sweep_writes_json_csv_plot_with_paired_points(tmp_path, capsys, saved_figures):
    params = init_params(jax.random.PRNGKey(0), TINY.cnn)
    path = save_fewshot_checkpoint(tmp_path / "tiny.safetensors", params, TINY)
    argv = ["fewshot", "sweep", "--checkpoint", str(path), "--tasks", "3", "--queries", "2", "--data-dir", str(SHARED)]
    argv += ["--times", "1s,1d", "--compensation", "none,array", "--budgets", "2,0", "--out", str(tmp_path), "--json"]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    points = record["points"]
    assert len(points) == 2 * 2 * 2
    assert [p["time_since_programming_s"] for p in points[:4]] == [1.0] * 4 and points[4][
        "time_since_programming_s"
    ] == 86400.0
    assert {p["drift_compensation"] for p in points} == {"none", "array"}
    assert all(0 <= p["accuracy_mean"] <= 1 for p in points)
    budget_2 = [p["devices_reprogrammed_max"] for p in points if p["update_budget"] == 2]
    assert max(budget_2) <= 2 * 2 * TINY.inner_steps  # 2 weights per step, each one or two devices
    assert record["provenance"]["checkpoint"] == str(path)
    rows = list(csv.DictReader((tmp_path / "fewshot_sweep.csv").open()))
    assert len(rows) == 8 and "accuracy_mean" in rows[0]
    assert (tmp_path / "fewshot_sweep.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "fewshot_sweep.json").read_text())["points"] == points
    # the plot: time ticks at the swept ages only, the band says what it is and over how many tasks, a
    # software 32-bit line on the same tasks, the chip named
    texts = {text for text, _ in saved_figures[-1]["texts"]}
    assert {"1 s", "1 d"} <= texts and not {"1 min", "1 h", "1 day"} & texts
    text = figure_text(saved_figures[-1])
    assert "shaded: 95 % CI of the mean over 3 tasks" in text and "3 unseen tasks" in text
    assert "software 32-bit, same tasks" in text and "chip, calibrated drift compensation, per array" in text
    # readout scales at one time: plotted against the scale; a range far too small clips updates
    argv = argv[: argv.index("--times")] + ["--times", "1h", "--readout-scales", "1,0.001", "--out", str(tmp_path)]
    assert main([*argv, "--json"]) == 0
    by_scale = {p["readout_scale"]: p for p in json.loads(capsys.readouterr().out)["points"]}
    assert by_scale[0.001]["readout_updates_clipped_mean"] > by_scale[1.0]["readout_updates_clipped_mean"]
    assert (tmp_path / "fewshot_sweep.png").stat().st_size > 10_000
