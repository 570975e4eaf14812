"""Data-parallel meta-training over several processes (several hosts, or several processes on one).

Every process runs the same loop (:func:`l2l_pcm.training.run`) with the same config. Each iteration's
meta-batch is drawn in full on every process from ``(seed, iteration)``, exactly as in a single-process
run, then placed as one global array whose task axis is split over all processes' devices
(:func:`shard_tasks`); parameters and optimiser state are replicated (:func:`replicate`). The scenario's
unchanged jitted ``train_step`` then compiles to one SPMD program: each device computes the losses and
meta-gradients of its share of the tasks, XLA all-reduces the partial sums across processes (gloo on CPU,
the default CPU collectives of the pinned JAX; NCCL on GPU) and every process applies the same Adam
update to its replica. The union of the shares is the single-process meta-batch, so the gradient equals
the single-process one up to the order of float additions.

Why one global program instead of per-process gradients averaged by hand: the robot's outer loss is not
a sum over tasks (its firing-rate penalty squares rates averaged over the whole batch, and trainee pass 1
is shared by all tasks), so summing per-shard gradients would change the objective. The global program
gives the single-process gradient for both scenarios without touching their losses, and the
single-process path stays exactly as it was (every function here is the identity there).

Random keys: a step's key comes from ``(seed, iteration)`` and is the same on every process. Per-task
keys (``jax.random.split(key, tasks)``, indexed by the task's global position in the meta-batch) and the
few-shot conv-kernel read are computed inside the global program, and with ``jax_threefry_partitionable``
(the default) random bits do not depend on how an array is split, so task ``t`` sees the same noise as
in a single-process run.

Only process 0 writes checkpoints, metrics and the progress bar (:func:`is_main`). Validation runs on
every process on its local copy of the parameters (same numbers, no collective, so no process waits in
a collective while another validates). An error on one process ends the others when the coordinator's
heartbeat times out.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from l2l_pcm.errors import ConfigError

TASK_AXIS = "tasks"
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
"""What ``jax.distributed.initialize()`` reads to join a SLURM job step (``srun``) without arguments."""


def _in_slurm_step() -> bool:
    if not all(name in os.environ for name in SLURM_VARS):
        return False
    try:
        return int(os.environ["SLURM_NTASKS"]) > 1
    except ValueError:
        return False


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> int:
    """Join a multi-process run before any JAX computation; returns the number of processes.

    Either all three of ``coordinator`` (``host:port`` of process 0), ``num_processes`` and ``process_id``
    are given, or none: then a SLURM job step of several tasks (``srun``, detected from ``SLURM_VARS``)
    is joined by ``jax.distributed.initialize()``, which reads coordinator, count and rank from SLURM's
    environment; otherwise the run is single-process and nothing happens.
    """
    given = (coordinator, num_processes, process_id)
    if all(value is None for value in given):
        if not _in_slurm_step():
            return 1
        kwargs: dict = {}
        where = "the SLURM job step"
    elif any(value is None for value in given):
        raise ConfigError("--coordinator, --num-processes and --process-id must be given together")
    else:
        host, _, port = str(coordinator).rpartition(":")
        if not (host and port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(f"--coordinator must be HOST:PORT with a port in 1..65535, got {coordinator!r}")
        if not (isinstance(num_processes, int) and num_processes >= 1):
            raise ConfigError(f"--num-processes must be an integer >= 1, got {num_processes!r}")
        if not (isinstance(process_id, int) and 0 <= process_id < num_processes):
            raise ConfigError(f"--process-id must be in 0..{num_processes - 1}, got {process_id!r}")
        if num_processes == 1:
            return 1
        kwargs = {"coordinator_address": coordinator, "num_processes": num_processes, "process_id": process_id}
        where = coordinator
    try:
        jax.distributed.initialize(**kwargs)
    except Exception as exc:  # JAX raises RuntimeError/ValueError/XlaRuntimeError with multi-line text
        text = " ".join(str(exc).split())
        raise ConfigError(f"cannot join the distributed run at {where}: {text}") from None
    return jax.process_count()


def is_main() -> bool:
    """Whether this process writes files (process 0, or the only process)."""
    return jax.process_index() == 0


@functools.cache
def _mesh() -> jax.sharding.Mesh:
    return jax.sharding.Mesh(np.array(jax.devices()), (TASK_AXIS,))


def _global(value: np.ndarray, spec: jax.sharding.PartitionSpec) -> jax.Array:
    """A global array from a value every process holds in full (each keeps only its own slices)."""
    sharding = jax.sharding.NamedSharding(_mesh(), spec)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def reached_stop_point(iteration: int) -> bool:
    """Whether a multi-process run must stop and save after ``iteration``; always False in one process.

    Once ``jax.distributed`` is up, JAX's preemption notifier takes SIGTERM (a cluster's time-limit
    signal) on any process and the processes agree on a common step after it (max of their steps + 1).
    Every process asks at every iteration, so all of them return True at that same iteration, save
    once (process 0) and exit; without this a SIGTERM was swallowed and the run went on.
    """
    if jax.process_count() == 1:
        return False
    from jax.experimental import multihost_utils

    return bool(multihost_utils.reached_preemption_sync_point(iteration))


def shard_tasks(tree):
    """Split the leading (task) axis of every leaf over all devices; the identity in a single process.

    Every process passes the whole meta-batch (drawn from the same seed), so no process needs to know
    which tasks are its own.
    """
    if jax.process_count() == 1:
        return tree
    devices = _mesh().size

    def place(leaf):
        value = np.asarray(leaf)
        if value.shape[0] % devices:
            raise ConfigError(
                f"a meta-batch of {value.shape[0]} tasks cannot be split evenly over {devices} devices "
                f"({jax.process_count()} processes); choose a multiple of {devices}"
            )
        return _global(value, jax.sharding.PartitionSpec(TASK_AXIS))

    return jax.tree_util.tree_map(place, tree)


def sum_over_tasks(fn, shared, per_task):
    """``Σ_t fn(shared, task_t)`` over the leading axis of ``per_task``, one task at a time.

    A ``lax.scan`` rather than a ``vmap``: one task's activations stay in cache, and a gradient taken
    inside ``fn`` keeps nothing for a later backward pass (few-shot meta-training sums per-task
    meta-gradients this way, exact because each task's loss depends only on the shared weights). In a
    multi-process run each device scans its own share of the tasks (``shard_map`` over the task axis)
    and the partial sums are all-reduced, so every process gets the single-process sum.
    """

    def local_sum(shared, per_task):
        first = jax.tree_util.tree_map(lambda leaf: leaf[0], per_task)
        shapes = jax.eval_shape(fn, shared, first)
        zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def body(total, task):
            return jax.tree_util.tree_map(jnp.add, total, fn(shared, task)), None

        return jax.lax.scan(body, zeros, per_task)[0]

    if jax.process_count() == 1:
        return local_sum(shared, per_task)

    def device_sum(shared, per_task):
        return jax.lax.psum(local_sum(shared, per_task), TASK_AXIS)

    # check_vma off: a custom VJP (the few-shot im2col conv) returns device-varying gradients for the
    # replicated weights, which the checker rejects; the psum makes every output replicated anyway.
    spec = jax.sharding.PartitionSpec
    summed = jax.shard_map(
        device_sum, mesh=_mesh(), in_specs=(spec(), spec(TASK_AXIS)), out_specs=spec(), check_vma=False
    )
    return summed(shared, per_task)


def replicate(tree):
    """Process 0's values of ``tree`` on every device; the identity in a single process.

    Broadcasting (rather than trusting every process to have loaded the same checkpoint) makes all
    replicas start identical even without a shared file system.
    """
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    tree = multihost_utils.broadcast_one_to_all(tree)
    return jax.tree_util.tree_map(lambda leaf: _global(np.asarray(leaf), jax.sharding.PartitionSpec()), tree)


def local(tree):
    """This process's copy of replicated arrays, usable by ordinary (single-device) code; identity in a
    single process, so the usual path pays no host round trip."""
    if jax.process_count() == 1:
        return tree

    def copy(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return jax.numpy.asarray(np.asarray(leaf.addressable_data(0)))
        return leaf

    return jax.tree_util.tree_map(copy, tree)
