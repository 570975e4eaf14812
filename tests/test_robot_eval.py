import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2l_pcm.cli import main
from l2l_pcm.eprop import software_memory
from l2l_pcm.errors import CheckpointError, ConfigError
from l2l_pcm.pcm import PCMDevice
from l2l_pcm.robot.arm import ScorbotER7, TwoLinkArm
from l2l_pcm.robot.deploy import ChipTrainee
from l2l_pcm.robot.evaluate import animate_arm, evaluate, plot_spikes_and_signals, plot_trajectories
from l2l_pcm.robot.model import ROBOT_HARDWARE, RobotConfig, init_params, inner_loop
from l2l_pcm.robot.train import RobotTrainConfig, load_robot_checkpoint, train, trajectories
from l2l_pcm.snn import LSGConfig, TraineeConfig


def small_robot(**changes) -> RobotConfig:
    """Trainee 12 LIF, LSG 16 neurons, 4-bit target code, 60 steps; a large η so updates are non-zero."""
    fields = dict(
        trainee=TraineeConfig(n_in=5, n_rec=12),
        lsg=LSGConfig(n_in=5 + 3 * 4, n_rec=16, n_out=12),
        n_steps=60,
        smoothing_window=30,
        clock_interval_steps=12,
        clock_period_steps=3,
        xyz_bits=4,
        batch=3,
        eta=0.05,
    )
    fields.update(changes)
    return RobotConfig(**fields)


@pytest.mark.parametrize("w_out_on_pcm", [False, True], ids=["digital_readout", "readout_on_chip"])
def test_chip_with_noise_off_matches_software(w_out_on_pcm):
    config = small_robot(w_out_on_pcm=w_out_on_pcm)
    params = init_params(jax.random.PRNGKey(0), config)
    targets = trajectories(config, jax.random.PRNGKey(1), 4)
    key = jax.random.PRNGKey(2)
    software = inner_loop(params, targets, key, config, memory=software_memory())
    noiseless = config.hardware.with_settings({"device": PCMDevice().noiseless(), "clock.deployment_age_s": 60.0})
    chip = ChipTrainee(params, config, key, noiseless)
    on_chip = inner_loop(params, targets, key, config, memory=chip.memory(), read_key=jax.random.PRNGKey(3))
    np.testing.assert_allclose(on_chip.before.xyz, software.before.xyz, atol=1e-5)
    np.testing.assert_allclose(on_chip.after.xyz, software.after.xyz, atol=1e-5)
    assert ("trainee_readout" in chip.chip.placements) == w_out_on_pcm
    nonzero = np.asarray(software.eprop.update.n_nonzero)
    assert nonzero.sum() > 0
    # one device of a pair changes per non-zero update unless the weight changes sign
    assert np.all(np.asarray(chip.record.devices_reprogrammed) >= nonzero)
    assert np.all(np.asarray(chip.record.devices_reprogrammed) <= 2 * nonzero)


def test_the_robots_crossbar_reads_are_booked_with_their_converter_clips():
    """Both passes' trainee reads and the readout's on PCM land in the chip's counters, converters included
    (they used to be booked as bare vector counts, their clips dropped)."""
    config = small_robot(w_out_on_pcm=True)
    params = init_params(jax.random.PRNGKey(0), config)
    targets = trajectories(config, jax.random.PRNGKey(1), 4)
    key = jax.random.PRNGKey(2)
    adc = config.hardware.with_settings(
        {"forward.adc_bits": 6, "forward.adc_range": 0.05, "clock.deployment_age_s": 60.0}
    )
    chip = ChipTrainee(params, config, key, adc)
    before = {name: dict(counters) for name, counters in chip.chip.counters.items()}
    inner_loop(params, targets, key, config, memory=chip.memory(), read_key=jax.random.PRNGKey(3))
    for name in ("trainee", "trainee_readout"):
        fan_out = chip.chip.placements[name].shape[1]
        counters = chip.chip.counters[name]
        vectors = counters["mvm_vectors"] - before[name]["mvm_vectors"]
        assert vectors == 2 * 4 * config.n_steps  # pass 1 and pass 2, every task and step
        assert counters["adc_conversions"] - before[name]["adc_conversions"] == vectors * fan_out
        assert counters["dac_conversions"] == 0  # no DAC configured
    assert chip.chip.saturation("trainee")["adc"] > 0  # a 0.05 range clips recurrent input currents
    assert any("'trainee'" in line and "ADC" in line for line in chip.chip.saturation_warnings())


def test_chip_backend_uses_the_checkpoints_device():
    """A noisier device in the config reaches the chip (it used to be built with the default device)."""
    config = small_robot(
        hardware=dataclasses.replace(ROBOT_HARDWARE, device=PCMDevice(prog_noise_scale=5.0, read_noise_scale=5.0))
    )
    params = init_params(jax.random.PRNGKey(0), config)
    assert ChipTrainee(params, config, jax.random.PRNGKey(1)).chip.config.device == config.device


def test_joint_positions_end_at_the_end_effector():
    for arm in (ScorbotER7(), TwoLinkArm()):
        q = jnp.array([[0.3, -0.2], [1.0, 0.5]])
        np.testing.assert_allclose(arm.joint_positions(q)[..., -1, :], arm.forward_kinematics(q), atol=1e-6)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("robot_run")
    config = RobotTrainConfig(
        model=small_robot(batch=2), iterations=2, validate_every=2, validation_tasks=3, checkpoint_every=1
    )
    train(config, out, progress=False, tensorboard=out / "tensorboard")
    return out / "last.safetensors", config


def test_training_writes_checkpoints_and_metrics(tiny_checkpoint):
    path, config = tiny_checkpoint
    params, loaded, meta = load_robot_checkpoint(path)
    assert loaded == config and meta["iteration"] == 2
    rows = json.loads((path.parent / "metrics.json").read_text())
    assert rows[-1]["iteration"] == 2 and "val_mse_after" in rows[-1]


def test_training_writes_tensorboard_events_of_every_validation_row(tiny_checkpoint):
    """``--tensorboard DIR``: the rows of metrics.json as TensorBoard scalars, tagged by name, step = iteration
    (read back with the event protobuf tensorboardX ships; records are TFRecord-framed)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    path, _ = tiny_checkpoint
    (events_file,) = (path.parent / "tensorboard").glob("events.out.tfevents.*")
    data, scalars = events_file.read_bytes(), {}
    while data:
        (length,) = struct.unpack("<Q", data[:8])
        event = Event.FromString(data[12 : 12 + length])
        data = data[12 + length + 4 :]
        for value in event.summary.value:
            scalars[(value.tag, event.step)] = value.simple_value
    rows = json.loads((path.parent / "metrics.json").read_text())
    assert rows and all(
        scalars[(name, row["iteration"])] == pytest.approx(value, rel=1e-6)
        for row in rows
        for name, value in row.items()
        if name != "iteration" and isinstance(value, (int, float))
    )


def test_resume_continues_to_the_same_parameters(tmp_path):
    base = RobotTrainConfig(
        model=small_robot(batch=2), iterations=4, validate_every=2, validation_tasks=3, checkpoint_every=2
    )
    train(base, tmp_path / "straight", progress=False)
    train(dataclasses.replace(base, iterations=2), tmp_path / "resumed", progress=False)
    train(base, tmp_path / "resumed", resume=True, progress=False)
    a, _, _ = load_robot_checkpoint(tmp_path / "straight" / "last.safetensors")
    b, _, _ = load_robot_checkpoint(tmp_path / "resumed" / "last.safetensors")
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_cli_eval_json_both_backends(tiny_checkpoint, capsys, tmp_path):
    path, _ = tiny_checkpoint
    results = {}
    for backend in ("software", "chip"):
        assert main(["robot", "eval", "--checkpoint", str(path), "--backend", backend, "--tasks", "3", "--json"]) == 0
        results[backend] = json.loads(capsys.readouterr().out)
    keys = {
        "backend",
        "tasks",
        "mse_before",
        "mse_after",
        "mse_after_ci95",
        "distance_cm_after",
        "devices_reprogrammed_fraction",
    }
    for backend, result in results.items():
        assert keys <= set(result) and result["backend"] == backend and result["tasks"] == 3
    assert 0 <= results["chip"]["devices_reprogrammed_fraction"] <= 1
    # per-task rows: the two ratios of the summary are the ratio of the rows' means and the mean of their ratios
    per_task = tmp_path / "tasks.json"
    args = ["robot", "eval", "--checkpoint", str(path), "--tasks", "3", "--json", "--per-task", str(per_task)]
    assert main([*args, "--chips", "2"]) == 0
    several = json.loads(capsys.readouterr().out)
    rows = json.loads(per_task.read_text())["rows"]
    assert "per_task" not in several and [(r["chip"], r["task"]) for r in rows] == [(0, 0), (0, 1), (0, 2), (1, 0),
                                                                                   (1, 1), (1, 2)]
    chip0 = rows[:3]
    assert several["mse_after_per_chip"][0] == pytest.approx(results["chip"]["mse_after"])
    assert results["chip"]["mse_ratio_after_to_before"] == pytest.approx(
        results["chip"]["mse_after"] / results["chip"]["mse_before"]
    )
    assert np.mean([r["mse_after"] for r in chip0]) == pytest.approx(results["chip"]["mse_after"], rel=1e-5)
    ratios = [r["mse_after"] / r["mse_before"] for r in chip0]
    assert np.mean(ratios) == pytest.approx(results["chip"]["mse_ratio_per_task_mean"], rel=1e-5)
    assert rows[3]["mse_after"] != rows[0]["mse_after"]  # another chip instance, other noise


@pytest.mark.slow  # end-to-end figure and GIF rendering (10 s)
def test_figures_and_gif(tiny_checkpoint, tmp_path, saved_figures):
    from PIL import Image

    from l2l_pcm.plotting import MIN_FONT_PT

    path, config = tiny_checkpoint
    params, config, _ = load_robot_checkpoint(path)
    _, (targets, result) = evaluate(params, config.model, "chip", 2, keep_examples=True)
    backend = "emulated PCM chip, 1 h after programming"
    assert plot_trajectories(targets, result, tmp_path / "t.png", backend=backend).stat().st_size > 5_000
    assert plot_spikes_and_signals(result, tmp_path / "s.png", backend=backend).stat().st_size > 5_000
    gif = animate_arm(config.model.arm_model, targets, result, tmp_path / "a.gif", frames=4, backend=backend)
    assert gif.read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    with Image.open(gif) as image:  # readable at its own size: 800 px wide at least, 14-pt labels
        assert image.size[0] >= 800 and image.n_frames == 4
    for record in saved_figures:  # the two figures and the GIF's 4 frames say where the update ran
        assert backend in "\n".join(text for text, _ in record["texts"])
        assert min(size for _, size in record["texts"]) >= MIN_FONT_PT
    assert all("target path" in {text for text, _ in record["texts"]} for record in saved_figures[2:])
    assert min(size for record in saved_figures[2:] for text, size in record["texts"] if "(m)" in text) >= 14


def test_robot_sweep_plot_has_the_software_reference(tiny_checkpoint, tmp_path, capsys, saved_figures):
    path, _ = tiny_checkpoint
    _, config, _ = load_robot_checkpoint(path)
    argv = ["robot", "sweep", "--checkpoint", str(path), "--tasks", "2", "--times", "1h,1y", "--out", str(tmp_path)]
    assert main([*argv, "--json"]) == 0
    points = json.loads(capsys.readouterr().out)["points"]
    assert [p["time_since_programming_s"] for p in points] == [3600.0, 365 * 86400.0]
    text = "\n".join(text for text, _ in saved_figures[-1]["texts"])
    model = "PCM model it was meta-trained with" if config.model.hardware_aware else "32-bit"  # as trained
    assert f"software, {model}, same trajectories" in text and "1 h" in text and "1 y" in text
    assert "shaded: 95 % interval of the ratio (paired delta method) over 2 tasks" in text


def test_robot_bad_inputs(tiny_checkpoint, tmp_path, capsys):
    path, config = tiny_checkpoint
    params, config, _ = load_robot_checkpoint(path)
    with pytest.raises(ConfigError, match="tasks"):
        evaluate(params, config.model, "chip", 1)
    with pytest.raises(ConfigError, match="backend"):
        evaluate(params, config.model, "gpu", 4)
    from l2l_pcm.fewshot.maml import MAMLConfig
    from l2l_pcm.fewshot.model import CNNConfig
    from l2l_pcm.fewshot.model import init_params as cnn_init
    from l2l_pcm.fewshot.train import save_fewshot_checkpoint

    fewshot = save_fewshot_checkpoint(
        tmp_path / "fs.safetensors", cnn_init(jax.random.PRNGKey(0), CNNConfig(8)), MAMLConfig(channels=8)
    )
    with pytest.raises(CheckpointError, match="expected 'robot-l2l'"):
        load_robot_checkpoint(fewshot)
    assert main(["robot", "eval", "--checkpoint", str(fewshot), "--tasks", "3"]) == 2
    assert "robot-l2l" in capsys.readouterr().err


@pytest.mark.slow  # 25 s; the authors-profile readout on PCM (make test-slow)
def test_readout_on_pcm_in_the_software_model_reads_drifted_weights():
    """W_out on PCM is read drifted (t/t0 = 32, no jitter or noise here): the outputs shrink by 32^-nu."""
    from l2l_pcm.pcm import device_profile

    device = device_profile("authors").replace(
        initial_programming="program", prog_noise_scale=0.0, read_noise_scale=0.0
    )
    base = small_robot(hardware_aware=True, hardware=dataclasses.replace(ROBOT_HARDWARE, device=device))
    params = init_params(jax.random.PRNGKey(0), base)
    targets = trajectories(base, jax.random.PRNGKey(1), 3)
    key = jax.random.PRNGKey(2)
    digital = inner_loop(params, targets, key, base)
    on_pcm = inner_loop(params, targets, key, dataclasses.replace(base, w_out_on_pcm=True))
    np.testing.assert_allclose(on_pcm.eprop.after.z, digital.eprop.after.z)  # same spikes ...
    ratio = float(jnp.abs(on_pcm.eprop.output_after).sum() / jnp.abs(digital.eprop.output_after).sum())
    assert 0.6 < ratio < 0.95  # ... read through weights drifted by 32^-nu (nu ~ 0.05-0.1: gains 0.7-0.85)


def test_eval_json_carries_its_provenance(tiny_checkpoint, capsys):
    from l2l_pcm import __version__
    from l2l_pcm.provenance import file_sha256

    path, _ = tiny_checkpoint
    argv = ["robot", "eval", "--checkpoint", str(path), "--backend", "chip", "--tasks", "2", "--json", "--seed", "3"]
    assert main([*argv, "--time-since-programming", "1h"]) == 0
    result = json.loads(capsys.readouterr().out)
    p = result["provenance"]
    assert p["l2l_pcm_version"] == __version__ and p["checkpoint"] == str(path)
    assert p["checkpoint_sha256"] == file_sha256(path)
    assert (p["seed"], p["tasks"], p["backend"], p["time_since_programming_s_asked"]) == (3, 2, "chip", 3600.0)
    assert p["device_profile"] == "ibm" and p["hardware"]["device"]["g_max_uS"] == 25.0
    assert p["date_utc"].endswith("+00:00")


def test_software_pcm_model_and_chip_agree_on_the_same_trajectories():
    """The robot's software PCM model (hardware-aware training's) is the chip's physics: on the same 30
    unseen trajectories of the shipped model, at the chip's read noise, MSE before and after the update
    agree within their intervals, and the paired ratio after/before is close."""
    from l2l_pcm.robot.train import SHIPPED_CHECKPOINT

    params, config, _ = load_robot_checkpoint(SHIPPED_CHECKPOINT)
    software = evaluate(params, config.model, "software", tasks=30, seed=5, precision="pcm")
    chip = evaluate(params, config.model, "chip", tasks=30, seed=5)
    for metric in ("mse_before", "mse_after"):
        difference = abs(chip[metric] - software[metric])
        assert difference <= chip[f"{metric}_ci95"] + software[f"{metric}_ci95"], (metric, chip, software)
    ratio = abs(chip["mse_ratio_after_to_before"] - software["mse_ratio_after_to_before"])
    assert ratio < 0.05, (chip["mse_ratio_after_to_before"], software["mse_ratio_after_to_before"])


def test_export_set_merges_a_section_field_by_field(tiny_checkpoint, tmp_path):
    """``--set 'model={"batch": 4}'`` changes the batch and nothing else of the model (it used to replace
    the whole model config, silently resetting its hardware to the defaults)."""
    path, config = tiny_checkpoint
    model = config.model.with_hardware(device="authors", update__rounding="stochastic")
    source = tmp_path / "authors.safetensors"
    from l2l_pcm.checkpoint import save_checkpoint

    params, _, _ = load_robot_checkpoint(path)
    save_checkpoint(
        source, "robot-l2l", {"params": params}, {"config": dataclasses.replace(config, model=model).to_json()}
    )
    exported = tmp_path / "exported.safetensors"
    assert main(["export", str(source), str(exported), "--set", 'model={"batch": 4}']) == 0
    _, loaded, meta = load_robot_checkpoint(exported)
    assert loaded.model == dataclasses.replace(model, batch=4)
    assert meta["export_changes"] == {"model": {"batch": 4}}


def test_resume_without_a_config_continues_the_runs_own(tiny_checkpoint, tmp_path):
    """``--resume`` needs no ``--config``: the run's config is in its checkpoint (it used to fail with a
    misleading model-size error against the default config)."""
    import shutil

    path, config = tiny_checkpoint
    run = tmp_path / "run"
    shutil.copytree(path.parent, run)
    assert main(["robot", "train", "--out", str(run), "--resume", "--iterations", "3", "--no-progress"]) == 0
    _, loaded, meta = load_robot_checkpoint(run / "last.safetensors")
    assert meta["iteration"] == 3 and loaded == dataclasses.replace(config, iterations=3)


def test_one_writer_per_run_folder_and_a_killed_holder_leaves_no_lock(tiny_checkpoint, tmp_path, capsys):
    """A second run into a folder another process is writing gets one error naming the holder, and leaves
    the folder as it was; once the holder is killed (no clean exit), the folder can be written again."""
    import shutil
    import subprocess
    import sys

    path, _ = tiny_checkpoint
    run = tmp_path / "run"
    shutil.copytree(path.parent, run)
    hold = (
        "import sys, time\nfrom pathlib import Path\nfrom l2l_pcm.training import run_folder_lock\n"
        "with run_folder_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {p.name: p.read_bytes() for p in run.glob("*.safetensors")}
        argv = ["robot", "train", "--out", str(run), "--resume", "--iterations", "3", "--no-progress"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"is being written by another l2l-pcm run (pid {holder.pid} on " in err
        assert {p.name: p.read_bytes() for p in run.glob("*.safetensors")} == before
    finally:
        holder.kill()
        holder.wait()
    assert main(argv) == 0  # the OS released the killed holder's lock
    assert not (run / ".l2l-pcm.lock.owner").exists()


def test_tensorboard_without_its_extra_is_one_clear_error(monkeypatch, tmp_path):
    import sys

    from l2l_pcm import training

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"pip install 'l2l-pcm\[tensorboard\]'"):
        training.run(None, tmp_path / "run", tensorboard=tmp_path / "tb")
    assert not (tmp_path / "run").exists()  # refused before anything was made
