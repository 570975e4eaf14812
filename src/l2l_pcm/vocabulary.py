"""The allowed values of the library's named settings, in one JAX-free module: the configs check against
them, and the command line offers them (its ``--help`` stays fast because it imports no JAX)."""

DEVICE_PROFILE_NAMES = ("ibm", "authors", "hermes", "aihwkit")
"""The names of :data:`l2l_pcm.pcm.DEVICE_PROFILES`, in order (``pcm`` refuses to import if they differ)."""
DRIFT_COMPENSATIONS = ("none", "global", "array", "column")
READ_NOISE_MODES = ("per_read", "per_batch")
READ_NOISE_RNGS = ("threefry", "counter")
UPDATE_ROUNDINGS = ("stochastic", "nearest")
CONVERTER_BITS = (2, 32)
"""The smallest and largest DAC/ADC resolution, in bits."""
PRECISIONS = ("trained", "fp32", "4bit", "pcm")
"""The weights a software evaluation runs with, one vocabulary for both scenarios (the robot has no 4-bit
model and refuses it)."""
ARM_DYNAMICS = ("kinematic", "mujoco")
"""How the robot's commanded velocities become the scored path: closed-form kinematics or the simulated arm."""
