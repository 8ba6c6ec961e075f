"""Predict the GPU memory of a PyTorch workload without a GPU and without allocating it.

Inside :class:`FakeGPU` every tensor is a *fake tensor* (``torch._subclasses.fake_tensor``): it has a
shape, dtype and storage size but no data, and ops only compute output metadata. A dispatch mode sees
every op's outputs and counts each new storage once; a weak reference to the storage uncounts it when
the last tensor or view using it dies. ``live`` is then what ``torch.cuda.memory_allocated()`` would
report at that point of the program and ``peak`` what ``torch.cuda.max_memory_allocated()`` would,
under these assumptions (tests/bench/test_fake_gpu.py checks them, and matches the real CPU
allocator byte for byte on small LTX-2 transformer, VAE, upsampler and Gemma 3 modules):

* Every byte of every fake tensor is on the GPU. Storages are rounded up to 512 bytes like the CUDA
  caching allocator's blocks. Not modelled: the CUDA context, cuBLAS/cuDNN workspaces (a conv3d
  may ask cuDNN for a large one), temporaries *inside* one kernel, and the allocator's reserved-but-
  free memory (fragmentation, ``memory_reserved`` > ``memory_allocated``).
* Lifetimes are Python's, as on the device: ``y = f(x); del x`` peaks at x + y, then holds y.
* ``scaled_dot_product_attention`` allocates what the fused CUDA kernels allocate (FlashAttention-2
  without a mask, memory-efficient with one: the output, plus a float32 log-sum-exp per query for
  flash), never a T x T score matrix. A materialised score matrix for a 1080p LTX-2 stage-2 step
  would be 68 GB per call.
* Composite ops are split into the ops their C++ implementation calls, as the dispatcher does on a
  device, so their temporaries (``reshape`` copies, ...) count. ``_fused_rms_norm``, the one composite
  with its own CUDA kernel (native_functions.yaml), counts only its outputs.

Workarounds this needs (torch 2.13 CPU build, diffusers 0.42.1, transformers 5.x):

* The fake GPU is ``FakeGPU.device`` = ``cpu``, not ``cuda``. Fake ``cuda`` tensors break in the C++
  Python bindings of a CPU-only build before any mode sees the call: ``x[:, 0] = v``, ``x[None]``
  need a CUDA device guard (diffusers transformer_ltx2.py:936 ``pixel_coords[:, 0, ...] = ...``,
  :591 ``scale_shift_table[None, None].to(temb.device)``), and ``x.to("cuda")``, ``.cuda()``,
  ``new_tensor`` and ``nn.Linear(device="cuda")`` need CUDA lazy init ("PyTorch is not linked with
  support for cuda devices"). Put inputs on ``gpu.device``. Code branching on ``device.type ==
  "cuda"`` takes its CPU branch; on the LTX-2/Gemma paths that is only attention, handled here.
* Attention: diffusers' native backend (models/attention_dispatch.py:3760) and transformers' sdpa
  (integrations/sdpa_attention.py:182) call ``torch.nn.functional.scaled_dot_product_attention``,
  which is replaced by :func:`_fused_sdpa` while the context is entered; ``aten.scaled_dot_product_
  attention`` reaching the dispatch mode (C++ callers under inference mode) is routed there too.
* Weight init is skipped (:func:`no_weight_init`): torch/nn/init.py:119 ``if not mask.any()`` in
  ``trunc_normal_`` (SigLIP ``lecun_normal_``, transformers models/siglip/modeling_siglip.py:423, in
  Gemma 3's vision tower) is data-dependent. No LTX-2 *forward* path needs one: the transformer (RoPE
  coordinates computed inside), connectors, video VAE encode/decode (tiled or not), upsampler, audio
  VAE, vocoders and Gemma 3 with ``output_hidden_states`` all run as they are.
* Data-dependent ops raise (``.item()``, ``bool(t)``, ``.tolist()``: ``DataDependentOutputException``;
  ``nonzero``, boolean-mask indexing: ``DynamicOutputShapeException``): pass Python values instead.
* Run forwards under ``torch.inference_mode()`` (or ``no_grad``): the parameters require grad, so
  otherwise autograd keeps every activation for a backward pass, and the count says so.

Typical use::

    with FakeGPU() as gpu, torch.inference_mode():
        transformer = build_component("LTX-2-19B-dev", "transformer")  # gpu.live: the weights
        with gpu.phase("step") as step:
            transformer(hidden_states=torch.empty(1, 24_000, 128, device=gpu.device), ...)
        print(step.above_start / 2**30, "GiB above the weights")
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

CONFIGS = Path(__file__).with_name("ltx2-configs.json")
GiB = 2**30

_aten = torch.ops.aten
# The CUDA caching allocator hands out blocks in multiples of 512 bytes (kMinBlockSize); zero-byte
# tensors get no block.
_BLOCK = 512
# CompositeImplicitAutograd ops that also have their own CUDA kernel (native_functions.yaml lists
# both). On a GPU the CUDA kernel wins, so they must not be split into their composite parts.
_FUSED_ON_CUDA = {_aten._fused_rms_norm.default}
_SDPA = _aten.scaled_dot_product_attention.default
# Alignment (elements) the memory-efficient kernel needs on its bias; others are padded (copied).
_MEM_EFF_ALIGNMENT = 8


def _block_bytes(nbytes: int, block: int = _BLOCK) -> int:
    return 0 if nbytes == 0 else -(-nbytes // block) * block


@dataclass
class Phase:
    """Memory of one named phase: live bytes at its start and end, and the high-water mark inside."""

    name: str
    start: int
    peak: int = 0
    end: int = 0
    largest: int = 0  # elements of the largest tensor allocated inside (CUDA kernels index with int32)

    @property
    def above_start(self) -> int:
        """Peak minus what was live when the phase began: the phase's own activations."""
        return self.peak - self.start


class _Counter(TorchDispatchMode):
    """Sits above the fake mode, so it sees every op and the fake tensors it returns."""

    def __init__(self, gpu: FakeGPU) -> None:
        super().__init__()
        self.gpu = gpu

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _SDPA:
            with self:
                return _fused_sdpa(*args, **kwargs)
        if (
            func.namespace == "aten"
            and func not in _FUSED_ON_CUDA
            and func.has_kernel_for_dispatch_key(torch._C.DispatchKey.CompositeImplicitAutograd)
        ):
            # What the dispatcher does on a real device: run the C++ composite, whose ops come back here.
            with self:
                return func.decompose(*args, **kwargs)
        out = func(*args, **kwargs)
        self.gpu._see(out, func)
        return out


class FakeGPU:
    """Context manager: inside it, tensors are fake (no memory, no compute) and every live byte of
    fake tensor storage is counted as GPU memory; ``peak`` is the high-water mark.

    Counting follows storages, not tensors: views and in-place/``out=`` results share their base's
    storage and cost nothing; a storage is freed when the last tensor using it dies (weak reference
    to the storage object, which PyTorch keeps alive exactly as long as the storage itself).

    Everything must be created inside the context: each context has its own fake mode, and real
    tensors from outside are rejected rather than silently left uncounted. Not reentrant, and it
    patches ``torch.nn.functional.scaled_dot_product_attention`` process-wide while entered.

    ``phases`` holds the :class:`Phase` records of :meth:`phase`. For debugging a peak, set
    ``record_peak = True`` (costly: a snapshot per new high-water mark) and read ``peak_tensors``:
    (bytes, "op shape dtype") of every storage live at the peak, largest first.
    """

    device = torch.device("cpu")

    def __init__(self, *, block: int = _BLOCK) -> None:
        """``block``: allocation granularity in bytes (512 like the CUDA caching allocator; 1 = exact)."""
        self.block = block
        self.live = 0
        self.peak = 0
        self.largest = 0
        self.phases: dict[str, Phase] = {}
        self._sizes: dict[int, int] = {}
        self._refs: dict[int, weakref.ref] = {}
        self._origin: dict[int, str] = {}
        self.record_peak = False
        self.peak_tensors: list[tuple[int, str]] = []
        self._fake = FakeTensorMode(allow_non_fake_inputs=False)
        self._counter = _Counter(self)
        self._saved_sdpa = None

    def __enter__(self) -> FakeGPU:
        self._fake.__enter__()
        self._counter.__enter__()
        # Python callers without inference mode reach the CPU SDPA choice before any dispatch mode;
        # route them to the same fused-kernel model.
        self._saved_sdpa = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = _fused_sdpa
        return self

    def __exit__(self, *exc: object) -> None:
        F.scaled_dot_product_attention = self._saved_sdpa
        self._counter.__exit__(*exc)
        self._fake.__exit__(*exc)

    def reset_peak(self) -> None:
        """Start a new high-water mark from what is live now (``torch.cuda.reset_peak_memory_stats``)."""
        self.peak = self.live

    @contextmanager
    def phase(self, name: str) -> Iterator[Phase]:
        """Record the peak reached inside the block as ``phases[name]``, without losing the overall peak."""
        record = Phase(name, start=self.live)
        outer_peak, outer_largest = self.peak, self.largest
        self.peak, self.largest = self.live, 0
        try:
            yield record
        finally:
            record.peak, record.end, record.largest = self.peak, self.live, self.largest
            self.peak, self.largest = max(outer_peak, self.peak), max(outer_largest, self.largest)
            self.phases[name] = record

    def _see(self, out: Any, func: Any = None) -> None:
        for t in tree_flatten(out)[0]:
            if not isinstance(t, FakeTensor):
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            size = _block_bytes(storage.nbytes(), self.block)
            known = self._sizes.get(key)
            if known is None:
                self._refs[key] = weakref.ref(storage, lambda _, key=key: self._free(key))
            elif known == size:
                continue
            else:  # resized in place (resize_, out= into a too-small tensor)
                self.live -= known
            self._sizes[key] = size
            self.largest = max(self.largest, t.numel())
            self._origin[key] = f"{func} {tuple(t.shape)} {t.dtype}".replace("torch.", "")
            self.live += size
            if self.live > self.peak:
                self.peak = self.live
                if self.record_peak:
                    self.peak_tensors = sorted(
                        ((n, self._origin[k]) for k, n in self._sizes.items()), reverse=True
                    )

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)
        self._refs.pop(key, None)
        self._origin.pop(key, None)


def _fused_sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """Allocate what SDPA allocates on an H100 in inference, and return an output of the right shape.

    No mask: FlashAttention-2 (bf16/fp16, head dim <= 256) writes the output as [B, T, H, D] and returns
    it transposed, plus a float32 log-sum-exp [B, H, T]. With a mask (or fp32): the memory-efficient
    kernel, same output; a boolean mask is first converted to an additive one, and a misaligned
    mask is padded (both copies of the mask, at its un-broadcast size); a float32 accumulator
    [B, T, H, D] when D > 128 and the output is not float32. With a mask *and* grouped-query
    attention no fused kernel applies and PyTorch takes the math path: the score matrix is real then.
    """
    *batch, tq, _ = query.shape
    dv = value.shape[-1]
    if attn_mask is not None and enable_gqa:
        # Math path: scores and probabilities [..., Tq, Tk] in the query dtype.
        scores = torch.empty(*batch, tq, key.shape[-2], dtype=query.dtype, device=query.device)
        probs = torch.empty_like(scores)
        del scores, probs
    fused = query.dtype in (torch.float16, torch.bfloat16) and query.shape[-1] <= 256
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.empty(attn_mask.shape, dtype=query.dtype, device=query.device)
        aligned = attn_mask.stride(-1) == 1 and all(
            s % _MEM_EFF_ALIGNMENT == 0 for s in attn_mask.stride()[:-1]
        )
        if not aligned:
            padded = list(attn_mask.shape)
            padded[-1] = -(-padded[-1] // _MEM_EFF_ALIGNMENT) * _MEM_EFF_ALIGNMENT
            attn_mask = torch.empty(padded, dtype=attn_mask.dtype, device=query.device)
    if query.dim() == 4:
        b, h = batch
        out = torch.empty(b, tq, h, dv, dtype=query.dtype, device=query.device).transpose(1, 2)
    else:
        out = torch.empty(*batch, tq, dv, dtype=query.dtype, device=query.device)
    if attn_mask is None and fused:
        lse = torch.empty(*batch, tq, dtype=torch.float32, device=query.device)
        del lse
    elif dv > 128 and query.dtype != torch.float32:
        accumulator = torch.empty(out.shape, dtype=torch.float32, device=query.device)
        del accumulator
    del attn_mask
    return out


def component_config(checkpoint: str, component: str) -> tuple[str, dict[str, Any]]:
    """(class name, constructor config) of one component of bench/ltx2-configs.json, ``_...`` keys dropped."""
    configs = json.loads(CONFIGS.read_text())
    if checkpoint.startswith("_") or checkpoint not in configs:
        names = ", ".join(k for k in configs if not k.startswith("_"))
        raise KeyError(f"unknown checkpoint {checkpoint!r}; known: {names}")
    parts = configs[checkpoint]
    if component.startswith("_") or not isinstance(parts.get(component), dict):
        names = ", ".join(k for k, v in parts.items() if not k.startswith("_") and isinstance(v, dict))
        raise KeyError(f"{checkpoint} has no component {component!r}; it has: {names}")
    raw = parts[component]
    return raw["_class_name"], {k: v for k, v in raw.items() if not k.startswith("_")}


def _component_class(class_name: str) -> type:
    import diffusers
    import diffusers.pipelines.ltx2 as ltx2
    import transformers

    for module in (diffusers, ltx2, transformers):
        if hasattr(module, class_name):
            return getattr(module, class_name)
    raise KeyError(f"no class {class_name!r} in diffusers, diffusers.pipelines.ltx2 or transformers")


_INIT_FUNCTIONS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)


@contextmanager
def no_weight_init() -> Iterator[None]:
    """Make ``torch.nn.init``'s initialisers no-ops (values of fake weights do not exist anyway).

    Needed, not just faster: ``trunc_normal_`` (SigLIP's ``lecun_normal_`` in the Gemma 3 vision tower,
    torch/nn/init.py ``_no_grad_trunc_normal_``) rejection-samples with ``if not mask.any()``, which a fake
    tensor cannot answer. transformers keeps its own references in ``initialization.TORCH_INIT_FUNCTIONS``.
    """

    def keep(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return tensor

    tables: list[Any] = [torch.nn.init.__dict__]
    try:
        from transformers import initialization
    except ImportError:  # no transformers: nothing of theirs to patch
        pass
    else:
        tables.append(initialization.TORCH_INIT_FUNCTIONS)
    saved = [(table, name, table[name]) for table in tables for name in _INIT_FUNCTIONS if name in table]
    try:
        for table, name, _ in saved:
            table[name] = keep
        yield
    finally:
        for table, name, original in saved:
            table[name] = original


def build_component(
    checkpoint: str,
    component: str,
    *,
    dtype: torch.dtype = torch.bfloat16,
    overrides: dict[str, Any] | None = None,
) -> torch.nn.Module:
    """A full-size component of bench/ltx2-configs.json with fake weights on the fake GPU, in seconds.

    ``checkpoint`` is a key such as ``LTX-2-19B-dev``, ``LTX-2.3-22B-dev`` or ``LTX-2.5-22B``;
    ``component`` one of its parts (``transformer``, ``connectors``, ``vae``, ``audio_vae``,
    ``vocoder``, ``latent_upsampler``, ``text_encoder``, ...). Call it inside :class:`FakeGPU`: the
    parameters and buffers then count as live bytes. Built like the notes (ltx2-full-size.md
    section 2) build real random-weight models on a GPU: the constructor runs with ``dtype`` as the
    default dtype, so parameters and default-dtype buffers are ``dtype`` and buffers made with an
    explicit dtype keep it. Weight initialisers are skipped (:func:`no_weight_init`). ``overrides``
    patch the config (``{"num_layers": 1}``); for a transformers model they patch ``text_config``.
    """
    class_name, config = component_config(checkpoint, component)
    cls = _component_class(class_name)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(FakeGPU.device), no_weight_init():
            if cls.__module__.startswith("transformers."):
                import transformers

                text = {**config.get("text_config", {}), **(overrides or {})}
                config_cls = type(transformers.AutoConfig.for_model(config["model_type"]))
                model = cls(config_cls.from_dict({**config, "text_config": text}))
            else:
                model = cls.from_config({**config, **(overrides or {})})
    finally:
        torch.set_default_dtype(default)
    return model.eval()


def component_bytes(module: torch.nn.Module, block: int = 1) -> int:
    """Bytes of a module's parameters and buffers, each storage once (shared or tied weights count once).

    ``block`` rounds each storage like :class:`FakeGPU` does; pass 512 to compare with ``FakeGPU().live``.
    """
    seen: dict[int, int] = {}
    for t in [*module.parameters(), *module.buffers()]:
        storage = t.untyped_storage()
        seen[storage._cdata] = _block_bytes(storage.nbytes(), block)
    return sum(seen.values())


def gib(nbytes: float) -> str:
    return f"{nbytes / GiB:.1f}"


__all__ = [
    "FakeGPU",
    "GiB",
    "Phase",
    "build_component",
    "component_bytes",
    "component_config",
    "gib",
    "no_weight_init",
]
