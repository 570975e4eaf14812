r"""A recurrent spiking network to NIR and back (the Neuromorphic Intermediate Representation, Pedersen et
al. 2024, Nat. Commun. 15:8122; https://neuroir.org), so that Norse, snnTorch, Spyx, Rockpool or Lava can
run what was learned here. Needs the optional ``nir`` package (``pip install "l2l-pcm[nir]"``).

The graph of a :class:`~l2l_pcm.snn.SNNConfig` network with weights ``(W_in, W_rec, W_out)``::

    input → w_in (Linear) → lif (LIF) → w_out (Linear) → readout (LI) → output
                            lif → w_rec (Linear) → lif

NIR's neurons are continuous-time, :math:`\tau \dot v = (v_{leak} - v) + R\,I`. Ours are discrete
(:mod:`l2l_pcm.snn`): :math:`v(t) = \alpha v(t-1) + I(t)` with :math:`\alpha = e^{-dt/\tau_m}`, the
exact solution over one step for :math:`\tau = \tau_m` and :math:`R = \tau_m/dt` (input gain 1). So
``tau`` = τ_m and ``r`` = τ_m/dt (seconds), ``v_leak`` = 0, ``v_threshold`` = the threshold, and the readout
is an LI node with τ_out. What NIR 1.0 cannot say is kept in node metadata, which consumers may ignore:
our reset subtracts the threshold (NIR's ``v_reset`` = 0 is the reset-to-zero reading), and
``refractory_steps`` silent steps follow a spike; the step ``dt`` is the graph's metadata. Networks with
adaptive-threshold (ALIF) neurons are refused: NIR 1.0 has no such neuron.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from l2l_pcm.errors import ConfigError
from l2l_pcm.snn import SNNConfig

NODES = ("input", "w_in", "lif", "w_rec", "w_out", "readout", "output")
EDGES = (
    ("input", "w_in"),
    ("w_in", "lif"),
    ("lif", "w_rec"),
    ("w_rec", "lif"),
    ("lif", "w_out"),
    ("w_out", "readout"),
    ("readout", "output"),
)


def _nir():
    try:
        import nir
    except ImportError as error:  # an optional extra: say how to get it
        raise ConfigError('NIR export needs the nir package: pip install "l2l-pcm[nir]"') from error
    return nir


def to_nir(p: SNNConfig, w_in, w_rec, w_out):
    """The :class:`nir.NIRGraph` of network ``p`` with weights ``W_in [n_in, n_rec]``, ``W_rec [n_rec, n_rec]``
    (its diagonal, which the network never uses, written as 0), ``W_out [n_rec, n_out]`` (NIR's ``Linear``
    weights are [out, in]: transposed here)."""
    nir = _nir()
    if p.n_alif:
        raise ConfigError(f"the network has {p.n_alif} ALIF neurons; NIR 1.0 has no adaptive-threshold neuron")
    w_in, w_rec, w_out = (np.asarray(w, np.float32) for w in (w_in, w_rec, w_out))
    for name, w, shape in (
        ("W_in", w_in, (p.n_in, p.n_rec)),
        ("W_rec", w_rec, (p.n_rec, p.n_rec)),
        ("W_out", w_out, (p.n_rec, p.n_out)),
    ):
        if w.shape != shape:
            raise ConfigError(f"{name} has shape {w.shape}, the network needs {shape}")
    w_rec = w_rec * (1.0 - np.eye(p.n_rec, dtype=np.float32))  # no self-connections (l2l_pcm.snn.stack_weights)
    dt_s = p.dt_ms / 1000.0

    def per_neuron(value: float, n: int) -> np.ndarray:  # float64: the constants come back as they were
        return np.full(n, value, np.float64)

    tau_m, tau_out = p.tau_m_ms / 1000.0, p.tau_out_ms / 1000.0
    lif_metadata = {"reset": "subtract", "refractory_steps": p.n_refractory, "pseudo_derivative_height": p.damping}
    nodes = {
        "input": nir.Input(input_type={"input": np.array([p.n_in])}),
        "w_in": nir.Linear(weight=w_in.T),
        "lif": nir.LIF(
            tau=per_neuron(tau_m, p.n_rec),
            r=per_neuron(tau_m / dt_s, p.n_rec),
            v_leak=per_neuron(0.0, p.n_rec),
            v_threshold=per_neuron(p.threshold, p.n_rec),
            v_reset=per_neuron(0.0, p.n_rec),
            metadata=lif_metadata,
        ),
        "w_rec": nir.Linear(weight=w_rec.T),
        "w_out": nir.Linear(weight=w_out.T),
        "readout": nir.LI(
            tau=per_neuron(tau_out, p.n_out), r=per_neuron(tau_out / dt_s, p.n_out), v_leak=per_neuron(0.0, p.n_out)
        ),
        "output": nir.Output(output_type={"output": np.array([p.n_out])}),
    }
    metadata = {"dt": dt_s, "source": "l2l-pcm", "discretisation": "exponential, input gain 1 per step"}
    return nir.NIRGraph(nodes=nodes, edges=list(EDGES), metadata=metadata)


def _single(values, what: str) -> float:
    values = np.asarray(values, np.float64).ravel()
    if values.size == 0 or not np.allclose(values, values[0], rtol=1e-6, atol=0):
        raise ConfigError(f"{what} differs between neurons; l2l-pcm's networks share one value")
    return float(values[0])


def _milliseconds(seconds: float) -> float:
    """Seconds to milliseconds without the float residue of the division (0.02 s → 20.0 ms, not 20.000000000000004)."""
    return float(np.round(seconds * 1000.0, 9))


def from_nir(graph) -> tuple[SNNConfig, np.ndarray, np.ndarray, np.ndarray]:
    """(network, W_in, W_rec, W_out) of a graph of :func:`to_nir`'s shape; anything else is refused."""
    nir = _nir()
    if set(graph.nodes) != set(NODES) or {tuple(edge) for edge in graph.edges} != set(EDGES):
        raise ConfigError(
            f"not a recurrent LIF network of l2l-pcm's shape: nodes {sorted(graph.nodes)}, edges {graph.edges}"
        )
    lif, readout = graph.nodes["lif"], graph.nodes["readout"]
    if not isinstance(lif, nir.LIF) or not isinstance(readout, nir.LI):
        raise ConfigError(f"expected LIF and LI nodes, got {type(lif).__name__} and {type(readout).__name__}")
    dt_s = float(graph.metadata.get("dt", 0.0))
    if not dt_s > 0:
        raise ConfigError("the graph's metadata has no time step 'dt'")
    tau_m, tau_out = _single(lif.tau, "LIF tau"), _single(readout.tau, "LI tau")
    for node, tau, name in ((lif, tau_m, "LIF"), (readout, tau_out, "LI")):
        if not np.isclose(_single(node.r, f"{name} r"), tau / dt_s, rtol=1e-5):
            raise ConfigError(f"{name} r must be tau/dt (input gain 1 per step), got {_single(node.r, name)}")
        if _single(node.v_leak, f"{name} v_leak") != 0.0:
            raise ConfigError(f"{name} v_leak must be 0")
    w_in, w_rec, w_out = (np.asarray(graph.nodes[name].weight, np.float32).T for name in ("w_in", "w_rec", "w_out"))
    metadata = lif.metadata or {}
    p = SNNConfig(
        n_in=w_in.shape[0],
        n_rec=w_in.shape[1],
        n_out=w_out.shape[1],
        threshold=_single(lif.v_threshold, "LIF v_threshold"),
        tau_m_ms=_milliseconds(tau_m),
        tau_out_ms=_milliseconds(tau_out),
        dt_ms=_milliseconds(dt_s),
        n_refractory=int(metadata.get("refractory_steps", 0)),
        damping=float(metadata.get("pseudo_derivative_height", SNNConfig.damping)),
    )
    return p, w_in, w_rec, w_out


def write_nir(path: str | os.PathLike, graph, overwrite: bool = False) -> Path:
    """Write ``graph`` to ``path`` (HDF5, ``nir.write``) atomically: a file already there is kept unless
    ``overwrite``, and an interrupted write leaves it as it was."""
    nir = _nir()
    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists; pass overwrite (--overwrite) to replace it")
    if not path.parent.is_dir():
        raise ConfigError(f"folder {path.parent} does not exist")
    partial = path.with_name(f".{path.name}.partial")
    try:
        nir.write(partial, graph)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
