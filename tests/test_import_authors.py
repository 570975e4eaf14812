"""``l2l-pcm import-authors``: the authors' models become ordinary checkpoints that record their conventions."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import needs_shared

from l2l_pcm.authors_pickle import read_authors_pickle
from l2l_pcm.cli import main
from l2l_pcm.fewshot.model import CNNConfig, embed, init_params, software_conv
from l2l_pcm.pcm import device_profile

AUTHORS = Path(__file__).resolve().parents[2] / "shared/reference/authors_checkpoints"
needs_authors = pytest.mark.skipif(
    not (AUTHORS / "robot_pretrained-weights.pickle").is_file(), reason="the authors' checkpoints are not present"
)


@needs_authors
def test_robot_import_records_the_authors_conventions(tmp_path):
    from l2l_pcm.robot.train import load_robot_checkpoint

    out = tmp_path / "robot.safetensors"
    assert main(["import-authors", "robot", str(AUTHORS / "robot_pretrained-weights.pickle"), str(out)]) in (None, 0)
    params, config, metadata = load_robot_checkpoint(out)
    model = config.model
    assert model.device == device_profile("authors")
    assert model.xyz_code == "authors" and model.clip_predicted_angles is False and model.w_out_on_pcm is True
    assert model.hardware_aware is True
    assert "Apache License 2.0" in metadata["attribution"] and len(metadata["source_sha256"]) == 64
    raw = read_authors_pickle(AUTHORS / "robot_pretrained-weights.pickle", "robot")
    np.testing.assert_array_equal(params["trainee_w_in"], raw["W_in_trainee"])
    np.testing.assert_array_equal(params["lsg_w_out"], raw["W_out_lsg"])
    off_diagonal = ~np.eye(250, dtype=bool)
    np.testing.assert_array_equal(np.asarray(params["trainee_w_rec"])[off_diagonal], raw["W_rec_trainee"][off_diagonal])
    assert float(jnp.abs(jnp.diag(params["trainee_w_rec"])).max()) == 0.0


@needs_authors
def test_fewshot_import_records_the_authors_conventions(tmp_path):
    from l2l_pcm.fewshot.train import load_fewshot_checkpoint

    out = tmp_path / "fewshot.safetensors"
    source = AUTHORS / "fewshot_pretrained-weights.pickle"
    assert main(["import-authors", "fewshot", str(source), str(out)]) in (None, 0)
    params, config, _ = load_fewshot_checkpoint(out)
    assert (config.normalisation, config.ink, config.norm_epsilon) == ("per_set", "zero", 1e-3)
    assert config.channels == 56 and config.inner_lr == 0.1 and config.device == device_profile("authors")
    raw = read_authors_pickle(AUTHORS / "fewshot_pretrained-weights.pickle", "fewshot")
    np.testing.assert_array_equal(params["conv2"], raw["conv2"])


@needs_authors
@needs_shared
def test_imported_fewshot_model_reproduces_the_authors_accuracy_on_a_few_tasks(tmp_path, capsys):
    """The full figures (600 tasks: 97.1 % per-set, 95.4 % support) are in the README; here 50 tasks."""
    import json

    out = tmp_path / "fewshot.safetensors"
    main(["import-authors", "fewshot", str(AUTHORS / "fewshot_pretrained-weights.pickle"), str(out)])
    capsys.readouterr()
    main(["fewshot", "eval", "--checkpoint", str(out), "--backend", "software", "--tasks", "50", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy_mean"] > 0.93  # the authors' model; a wrong polarity or normalisation gives < 0.5
    main(["fewshot", "eval", "--checkpoint", str(out), "--backend", "software", "--tasks", "50", "--json",
          "--normalisation", "support"])  # fmt: skip
    assert json.loads(capsys.readouterr().out)["accuracy_mean"] > 0.9


def test_per_set_normalisation_lets_queries_influence_each_other_support_does_not(key):
    params = init_params(key, CNNConfig(channels=8))
    k1, k2 = jax.random.split(key)
    sx = jax.random.uniform(k1, (10, 28, 28, 1))
    qx = jax.random.uniform(k2, (6, 28, 28, 1))

    def conv(i, x):
        return software_conv(params[f"conv{i + 1}"], x)

    changed = qx.at[0].set(1.0 - qx[0])
    for normalisation, leaks in (("support", False), ("per_set", True)):
        cnn = CNNConfig(channels=8, normalisation=normalisation)
        _, f_query = embed(conv, sx, qx, cnn)
        _, f_changed = embed(conv, sx, changed, cnn)
        assert np.allclose(f_query[1:], f_changed[1:], atol=1e-6) != leaks
    # the ink polarity flips the images before the first conv
    s1, q1 = embed(conv, sx, qx, CNNConfig(channels=8, ink="zero"))
    s2, q2 = embed(conv, 1.0 - sx, 1.0 - qx, CNNConfig(channels=8))
    np.testing.assert_allclose(q1, q2, atol=1e-5)
