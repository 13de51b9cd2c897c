"""Inference engines for an ensemble's members: torch eager, ONNX Runtime and OpenVINO.

A member under any engine is a callable from a float32 tensor ``(B, C, H, W)`` to float32
logits ``(B, K + E, H, W)``. The torch engine is the model itself. The graph engines run an
ONNX graph of the member with two outputs -- the logits and the deepest encoder feature map
(the feature distance and the novelty map) -- exported from the member's weights once per user and
cached by their SHA-256 (:func:`graph_path`): nothing is ever written into an ensemble folder,
and a graph is data (no code is executed when it is loaded). While
:func:`~scaleseg.models.capture_encoder_features` is active, a graph member appends each
batch's feature map to the capture list, as the torch hook does.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from pathlib import Path

import torch
from torch import nn

from ._features import deepest_map

log = logging.getLogger(__name__)

__all__ = [
    "ENGINES",
    "GraphModel",
    "available_engines",
    "engine_cache_dir",
    "export_graph",
    "graph_path",
    "PRECISIONS",
    "autocast_dtype",
    "load_graph_model",
    "resolve_engine",
    "resolve_precision",
]

ENGINES = ("torch", "onnxruntime", "openvino")
_PACKAGES = {"onnxruntime": ("onnxruntime",), "openvino": ("openvino",)}
_EXPORT_PACKAGES = ("onnx", "onnxscript")
GRAPH_VERSION = 2
"""Bumped whenever the exported graph changes (part of the cache key). 2: the features output
is the deepest map ``(B, D, h, w)``, no longer pooled."""


def available_engines() -> tuple[str, ...]:
    """The engines whose packages are installed here (torch always; graph engines also need
    ``onnx`` and ``onnxscript`` to export)."""
    have = lambda names: all(importlib.util.find_spec(n) is not None for n in names)  # noqa: E731
    graphs = have(_EXPORT_PACKAGES)
    return ("torch", *(e for e in ENGINES[1:] if graphs and have(_PACKAGES[e])))


def engine_cache_dir() -> Path:
    """Per-user cache of exported graphs: ``$SCALESEG_CACHE/engines``, else
    ``$XDG_CACHE_HOME/scaleseg/engines``, else ``~/.cache/scaleseg/engines``."""
    root = os.environ.get("SCALESEG_CACHE")
    if root:
        return Path(root) / "engines"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "scaleseg" / "engines"


class _WithFeatures(nn.Module):
    """An smp model's forward, returning its deepest encoder feature map too."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        features = self.model.encoder(x)
        masks = self.model.segmentation_head(self.model.decoder(features))
        return masks, deepest_map(features)


def graph_path(weights_sha256: str, tile_shape, in_channels: int) -> Path:
    """Where the graph of the member with these weights and window shape is cached."""
    ty, tx = (int(v) for v in tile_shape)
    key = f"{weights_sha256}-c{in_channels}-{ty}x{tx}-g{GRAPH_VERSION}-torch{torch.__version__}"
    return engine_cache_dir() / f"{key}.onnx"


def export_graph(model: nn.Module, path: str | os.PathLike, *, tile_shape, in_channels: int):
    """Export ``model`` (an smp model, eval mode) as an ONNX graph with a dynamic batch, a fixed
    ``tile_shape`` window and the outputs ``logits`` and ``features``; written atomically."""
    from ._export import write_onnx

    model.eval()
    x = torch.zeros((2, in_channels, *(int(v) for v in tile_shape)), dtype=torch.float32)
    return write_onnx(_WithFeatures(model).eval(), path, x, output_names=("logits", "features"),
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
                      optimize=True)  # fmt: skip


#: graphs (window shapes) a member keeps loaded: an archive of many image sizes stays bounded
MAX_SHAPES = 8


class GraphModel:
    """A member run by a graph engine: ``model(x)`` -> logits (float32 torch tensor on the
    CPU); the deepest feature map goes to the list of the calling thread's active capture
    (:attr:`feature_store`).

    Graphs have a fixed window shape (faster than dynamic ones): one is loaded per input shape
    met -- the image's window, and its transpose under dihedral test-time augmentation --
    exported from ``source()`` (the torch member) into the per-user cache when missing; at most
    :data:`MAX_SHAPES` stay loaded.
    """

    def __init__(self, engine: str, source, *, weights_sha256: str, in_channels: int,
                 threads: int, precision: str = "float32"):  # fmt: skip
        if engine not in _RUNNERS:
            raise ValueError(f"unknown graph engine {engine!r}; choose one of {ENGINES[1:]}")
        self.engine = engine
        self.weights_sha256 = weights_sha256
        self.in_channels = int(in_channels)
        self.threads = int(threads)
        self.precision = precision
        if precision not in ("float32", "bfloat16") or (
            engine == "onnxruntime" and precision != "float32"
        ):
            raise ValueError(f"engine {engine} does not run in {precision}")
        self._source = source
        self._runs: dict[tuple[int, int], object] = {}
        self._lock = threading.RLock()
        #: thread id -> the list of an active capture in that thread
        self.feature_store: dict[int, list] = {}

    def load(self, tile_shape) -> Path:
        """Load (exporting first if needed) the graph for ``tile_shape`` windows; its path."""
        shape = tuple(int(v) for v in tile_shape)
        self._runner(shape)
        return graph_path(self.weights_sha256, shape, self.in_channels)

    def _runner(self, shape: tuple[int, int]):
        with self._lock:  # threads of one worker share the member
            run = self._runs.get(shape)
            if run is None:
                path = graph_path(self.weights_sha256, shape, self.in_channels)
                if not path.is_file():
                    export_graph(self._source(), path, tile_shape=shape,
                                 in_channels=self.in_channels)  # fmt: skip
                while len(self._runs) >= MAX_SHAPES:  # the least recently loaded goes first
                    self._runs.pop(next(iter(self._runs)))
                run = self._runs[shape] = _RUNNERS[self.engine](path, self.threads,
                                                                self.precision)  # fmt: skip
            return run

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        run = self._runner(tuple(int(v) for v in x.shape[-2:]))
        logits, features = run(x.detach().to("cpu", torch.float32).contiguous().numpy())
        store = self.feature_store.get(threading.get_ident())
        if store is not None:
            store.append(torch.from_numpy(features))
        return torch.from_numpy(logits)


_ORT_SHARED_ARENA: bool | None = None
_ORT_ARENA_LOCK = threading.Lock()


def _ort_shared_arena(ort) -> bool:
    """Register one CPU arena for every ONNX Runtime session of this process (once).

    Each session's own arena keeps that session's peak activations after every run: 4 members
    x a few window shapes held 9.5 GiB in one predict worker (1.6 GiB per member for a 1024²
    window at batch 2) and paused it for good. Sessions run one at a time per thread, so one
    shared arena stays at the peak of the largest concurrent runs instead, at the arena's speed
    (``benchmarks/bench_ort_memory.py``). Without it (registration refused), sessions run with
    no arena: bounded too, but 18-25 % slower.
    """
    global _ORT_SHARED_ARENA
    with _ORT_ARENA_LOCK:
        if _ORT_SHARED_ARENA is None:
            try:
                info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                         ort.OrtMemType.DEFAULT)  # fmt: skip
                ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
                _ORT_SHARED_ARENA = True
            except Exception as exc:  # an ORT build without it: no arena at all
                log.warning("onnxruntime: no shared CPU arena (%s); sessions run without one", exc)
                _ORT_SHARED_ARENA = False
        return _ORT_SHARED_ARENA


def _onnxruntime(path: Path, threads: int, precision: str = "float32"):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if _ort_shared_arena(ort):
        opts.add_session_config_entry("session.use_env_allocators", "1")
    else:
        opts.enable_cpu_mem_arena = False
    session = ort.InferenceSession(str(path), sess_options=opts,
                                   providers=["CPUExecutionProvider"])  # fmt: skip

    def run(x):
        logits, features = session.run(["logits", "features"], {"image": x})
        return logits, features

    return run


def _openvino(path: Path, threads: int, precision: str = "float32"):
    import openvino as ov

    compiled = ov.Core().compile_model(
        str(path),
        "CPU",
        {"INFERENCE_NUM_THREADS": threads,
         "INFERENCE_PRECISION_HINT": "bf16" if precision == "bfloat16" else "f32",
         "PERFORMANCE_HINT": "LATENCY"},
    )  # fmt: skip
    out_logits, out_features = compiled.output("logits"), compiled.output("features")
    local = threading.local()  # an infer request is not thread-safe: one per thread

    def run(x):
        request = getattr(local, "request", None)
        if request is None:
            request = local.request = compiled.create_infer_request()
        res = request.infer({"image": x})
        return res[out_logits].copy(), res[out_features].copy()

    return run


_RUNNERS = {"onnxruntime": _onnxruntime, "openvino": _openvino}


def load_graph_model(
    engine: str, model, *, weights_sha256: str, tile_shape, in_channels: int,
    threads: int | None = None, precision: str = "float32",
) -> GraphModel:  # fmt: skip
    """The member ``model`` (weights already checked; or a callable returning it, called only
    when a graph must be exported) under ``engine``, its ``tile_shape`` graph exported to the
    per-user cache on first use."""
    source = model if callable(model) and not isinstance(model, nn.Module) else (lambda: model)
    member = GraphModel(engine, source, weights_sha256=weights_sha256, in_channels=in_channels,
                        threads=int(threads or torch.get_num_threads()),
                        precision=precision)  # fmt: skip
    member.load(tile_shape)
    return member


PRECISIONS = ("auto", "float32", "float16", "bfloat16")


def resolve_precision(precision: str, device) -> str:
    """The precision the members run in on ``device``: ``auto`` is float16 on CUDA and float32
    elsewhere; float16 on a CPU is an error (no fast CPU kernels)."""
    kind = getattr(device, "type", str(device))
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision == "auto":
        return "float16" if kind == "cuda" else "float32"
    if precision == "float16" and kind == "cpu":
        raise ValueError("precision float16 runs on GPUs; on CPUs use bfloat16 or float32")
    return precision


def autocast_dtype(precision: str, device):
    """The torch autocast dtype of ``precision`` on ``device`` (None: plain float32)."""
    p = resolve_precision(precision, device)
    return {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}[p]


def resolve_engine(engine: str, device, precision: str = "auto") -> str:
    """The engine that runs on ``device``: ``auto`` is torch on accelerators and, on the CPU,
    the fastest installed one measured (``benchmarks/bench_engines.py``): ONNX Runtime in
    float32 (0.60x torch's time per window for both the CPU recipe and ConvNeXt-Tiny),
    OpenVINO in bfloat16. An explicit graph engine on an accelerator, or ONNX Runtime in
    bfloat16, is an error."""
    on_cpu = getattr(device, "type", str(device)) == "cpu"
    p = resolve_precision(precision, device)
    have = available_engines()
    if engine == "auto":
        if not on_cpu:
            return "torch"
        if p == "bfloat16":
            return "openvino" if "openvino" in have and _openvino_has_bf16() else "torch"
        return "onnxruntime" if "onnxruntime" in have else "torch"
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose auto or one of {ENGINES}")
    if engine != "torch":
        if not on_cpu:
            raise ValueError(
                f"engine {engine!r} runs on the CPU, this worker has {device}: use the torch "
                "engine (or auto) on accelerators"
            )
        if engine == "onnxruntime" and p != "float32":
            raise ValueError(
                f"engine onnxruntime runs float32 only (asked: {p}); use openvino or torch"
            )
        if engine not in have:
            raise RuntimeError(
                f"engine {engine!r} is not installed here (installed: {', '.join(have)}); "
                "pip install 'scaleseg[engines]'"
            )
        if engine == "openvino" and p == "bfloat16" and not _openvino_has_bf16():
            raise ValueError(
                "this CPU has no bfloat16 support for OpenVINO (it would run float32): use "
                "precision float32, or torch"
            )
    return engine


_BF16: list[bool] = []


def _openvino_has_bf16() -> bool:
    """Whether OpenVINO runs bfloat16 on this CPU (else its precision hint is ignored)."""
    if not _BF16:
        import openvino as ov

        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        _BF16.append("BF16" in caps)
    return _BF16[0]
