import csv
import json

import numpy as np
import pytest

from l2l_pcm import statistics
from l2l_pcm.errors import ConfigError


def test_chip_and_task_spread_separates_a_chip_effect_from_a_task_effect():
    rng = np.random.default_rng(0)
    chip_offsets = np.array([-0.02, 0.0, 0.03])
    task_effects = rng.normal(0.0, 0.05, size=400)
    matrix = 0.9 + chip_offsets[:, None] + task_effects[None, :]
    spread = statistics.chip_and_task_spread(matrix, "accuracy")
    assert spread["accuracy_per_chip"] == pytest.approx(0.9 + chip_offsets + task_effects.mean())
    assert spread["accuracy_between_chips_std"] == pytest.approx(np.std(chip_offsets, ddof=1))
    assert spread["accuracy_between_tasks_std"] == pytest.approx(np.std(task_effects, ddof=1))
    # three chips: the interval of the mean over chips uses Student's t with 2 degrees of freedom, not 1.96
    assert spread["accuracy_between_chips_ci95"] == pytest.approx(4.303 * np.std(chip_offsets, ddof=1) / np.sqrt(3))
    # the grand mean's interval counts both, and is wider than the tasks-only one a single chip would report
    assert spread["accuracy_ci95_chips_and_tasks"] > spread["accuracy_ci95_tasks_only"]
    # no chip effect: both intervals nearly agree (many degrees of freedom)
    flat = statistics.chip_and_task_spread(np.tile(0.9 + task_effects, (3, 1)), "a")
    assert flat["a_between_chips_std"] == pytest.approx(0.0, abs=1e-12)
    assert flat["a_ci95_chips_and_tasks"] == pytest.approx(flat["a_ci95_tasks_only"], rel=0.01)


def test_t_quantiles():
    assert statistics.t_quantile_975(1) == pytest.approx(12.706)
    assert statistics.t_quantile_975(10) == pytest.approx(2.228)
    assert statistics.t_quantile_975(1000) == 1.96


def test_per_task_files_csv_and_json(tmp_path):
    rows = [{"chip": 0, "task": t, "accuracy_per_step": [0.2, 0.9 + t / 100]} for t in range(3)]
    statistics.write_per_task(tmp_path / "a.csv", rows)
    with (tmp_path / "a.csv").open() as f:
        read = list(csv.DictReader(f))
    assert len(read) == 3 and read[2]["accuracy_per_step_1"] == "0.92"
    statistics.write_per_task(tmp_path / "a.json", rows, {"seed": 0})
    assert json.loads((tmp_path / "a.json").read_text()) == {"rows": rows, "provenance": {"seed": 0}}
    with pytest.raises(ConfigError, match="must end in .csv or .json"):
        statistics.write_per_task(tmp_path / "a.txt", rows)
