"""l2l-pcm: learning-to-learn on emulated phase-change-memory in-memory-computing hardware."""

__version__ = "0.1.0"
