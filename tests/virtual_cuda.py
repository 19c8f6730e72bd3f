"""A CUDA device for machines without one, for tests: ``with virtual_cuda(): ...``.

Inside the block ``torch.cuda.is_available()`` is True, and a tensor put "on cuda" (a factory
with ``device="cuda"``, ``.to("cuda")``, ``.cuda()``, ``module.to("cuda")``, a CUDA generator,
``torch.load(map_location="cuda")``) is an ordinary CPU tensor whose storage the block tags.
Every torch call is watched (a ``TorchFunctionMode``): results of calls on tagged tensors are
tagged, ``.device`` and ``.is_cuda`` report cuda:0 for them, and the places where real CUDA
refuses to run raise here too:

* an op whose tensors sit on both devices (CPU indices into a CUDA embedding, a CPU batch
  through a CUDA model), apart from what CUDA allows: a 0-dim CPU tensor, CPU indices in
  ``t[idx]``, ``copy_`` and ``t[...] = x`` across devices;
* ``.numpy()`` / ``np.asarray`` of a CUDA tensor;
* a random draw whose generator is on the other device.

PyTorch's own ``FakeTensorMode`` would do this, but in a CPU-only build it cannot run
``.to("cuda")``, CUDA generators or autograd on CUDA parameters (checked with torch 2.13); the
numbers here are real CPU numbers, so a test can also compare them with a CPU run.
Autograd's own internals are trusted (real CUDA puts each gradient on its parameter's device):
mixing is not checked during ``backward``, and ``p.grad`` of a CUDA parameter is CUDA.
"""
from __future__ import annotations

import contextlib
import types
import weakref

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

CUDA = torch.device("cuda", 0)


class VirtualDeviceMismatch(RuntimeError):
    """Raised where real CUDA would refuse to mix devices."""


def _is_cuda(device) -> bool:
    if device is None:
        return False
    if isinstance(device, int):
        return True  # a bare index means a CUDA ordinal
    return torch.device(device).type == "cuda"


class _VirtualGenerator(torch.Generator):
    """A CPU generator that says it is a CUDA one (made by ``torch.Generator(device="cuda")``)."""

    @property
    def device(self):
        return CUDA


_REAL_GENERATOR = torch.Generator


class _GeneratorMeta(type(torch.Generator)):
    """``torch.Generator`` inside the block: still a class (annotations and isinstance work),
    but calling it with a CUDA device gives a virtual CUDA generator."""

    def __call__(cls, device="cpu"):
        return _VirtualGenerator() if _is_cuda(device) else _REAL_GENERATOR(device=device)

    def __instancecheck__(cls, obj):
        return isinstance(obj, _REAL_GENERATOR)


class _Generator(_REAL_GENERATOR, metaclass=_GeneratorMeta):
    pass


def _gen_is_cuda(g) -> bool:
    return isinstance(g, _VirtualGenerator)


# What CUDA allows across devices: copies in and out (indexing is checked on its own), and
# ops that only look at shapes.
_CROSS_OK = {"copy_", "_has_compatible_shallow_copy_type", "__deepcopy__", "expand_as", "view_as", "reshape_as",
             "broadcast_tensors", "is_same_size"}
# Ops where even a 0-dim CPU tensor may not meet a CUDA one.
_NO_SCALAR_EXEMPTION = {"cat", "concat", "concatenate", "stack", "hstack", "vstack", "embedding", "index_select",
                        "gather", "scatter", "scatter_add", "index_add", "mm", "bmm", "matmul", "addmm", "einsum"}
# Calls whose result is on the CPU whatever their (tensor) inputs: torch.tensor([t1, t2]) reads numbers.
_ON_CPU = {"tensor"}


def _int_scalar(t: torch.Tensor) -> bool:
    """A 0-dim integer tensor, which indexing reads as a Python number."""
    return t.dim() == 0 and not t.dtype.is_floating_point and t.dtype != torch.bool


# data_ptr -> weak reference to the storage of every tensor on the virtual device, shared by
# every block (a model moved to the GPU in one block is still there in the next). An entry
# leaves when its storage is freed, so the address can serve a CPU tensor again.
_STORAGES: dict[int, weakref.ref] = {}
# Bytes the virtual device holds now, and the most it has held since the last reset (what
# torch.cuda.max_memory_allocated reports inside a block).
_BYTES = {"now": 0, "peak": 0}


def _forget(ptr: int, ref: weakref.ref, nbytes: int) -> None:
    if _STORAGES.get(ptr) is ref:
        del _STORAGES[ptr]
        _BYTES["now"] -= nbytes


class _Mode(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.in_backward = 0

    # ---- tags -------------------------------------------------------------------------------
    def tagged(self, t: torch.Tensor) -> bool:
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return False
        ptr = st.data_ptr()
        if ptr == 0:
            return bool(getattr(t, "_virtual_cuda", False))
        ref = _STORAGES.get(ptr)
        return ref is not None and ref() is st

    def tag(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr == 0:
            t._virtual_cuda = True
            return
        ref = weakref.ref(st)
        _STORAGES[ptr] = ref
        weakref.finalize(st, _forget, ptr, ref, st.nbytes())
        _BYTES["now"] += st.nbytes()
        _BYTES["peak"] = max(_BYTES["peak"], _BYTES["now"])

    def _place(self, out, inputs, cuda: bool):
        """Tag (or untag by copying) the results of a call whose target device is known."""
        input_ptrs = {_ptr(t) for t in inputs}
        input_ids = {id(t) for t in inputs}

        def fix(t):
            if not isinstance(t, torch.Tensor) or id(t) in input_ids:
                return t  # an in-place op, out= or copy_ returns its own tensor, on its own device
            shared = _ptr(t) in input_ptrs and _ptr(t) != 0
            if cuda and not self.tagged(t):
                if shared:  # e.g. torch.as_tensor(cpu, device="cuda") returning its input
                    t = t.clone()
                self.tag(t)
            elif not cuda and self.tagged(t):
                t = t.clone()
            return t

        return tree_map(fix, out)

    # ---- the watch --------------------------------------------------------------------------
    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if name in ("__get__", "__set__"):
            return self._attribute(func, name, args, kwargs)
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        on_cuda = [self.tagged(t) for t in tensors]
        if name in ("backward",) or func is torch.autograd.backward:
            self.in_backward += 1
            try:
                return func(*args, **kwargs)
            finally:
                self.in_backward -= 1
        if name in ("numpy", "__array__") and tensors and on_cuda[0]:
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy "
                            "the tensor to host memory first. (virtual CUDA)")
        if name == "pin_memory":
            return args[0]
        if name in ("to", "cuda", "cpu"):
            return self._move(func, name, args, kwargs, tensors, on_cuda)

        # Where the result goes: an explicit device=..., else wherever the inputs are.
        if "device" in kwargs and kwargs["device"] is not None:
            cuda = _is_cuda(kwargs["device"])
            if cuda:
                kwargs["device"] = "cpu"
        else:
            cuda = any(on_cuda) and name not in _ON_CPU
        g = kwargs.get("generator")
        if g is not None:
            target = cuda if ("device" in kwargs or not tensors) else on_cuda[0]
            if _gen_is_cuda(g) != target:
                raise VirtualDeviceMismatch(
                    f"{name}: a {'cuda' if _gen_is_cuda(g) else 'cpu'} generator for a tensor on "
                    f"{'cuda' if target else 'cpu'} (real CUDA refuses this) (virtual CUDA)")
        if not self.in_backward:
            self._check_mix(name, args, tensors, on_cuda)
        out = func(*args, **kwargs)
        if cuda and name in ("as_tensor", "asarray") and isinstance(out, torch.Tensor) and not self.tagged(out):
            out = out.clone()  # onto the GPU is a copy, never a view of a NumPy array or a CPU tensor
        return self._place(out, tensors, cuda)

    def _check_mix(self, name, args, tensors, on_cuda):
        if name == "__getitem__":  # CPU indices into a CUDA tensor are fine; not the reverse
            index_on_cuda = [c and not _int_scalar(t) for t, c in zip(tensors[1:], on_cuda[1:])]
            if tensors and not on_cuda[0] and any(index_on_cuda):
                raise VirtualDeviceMismatch("indices on cuda:0 into a tensor on cpu (virtual CUDA)")
            return
        if name in ("__setitem__", "index_put_", "index_put"):
            # t[...] = v: a basic index copies across devices; an advanced one (a tensor index)
            # needs v on t's device unless v is a number or a 0-dim tensor.
            self_cuda, value = on_cuda[0], args[-1] if name == "__setitem__" else args[2]
            advanced = name != "__setitem__" or any(isinstance(i, torch.Tensor) for i in tree_flatten(args[1])[0])
            if advanced and isinstance(value, torch.Tensor) and value.dim() > 0 and self.tagged(value) != self_cuda:
                raise VirtualDeviceMismatch(f"{name}: a value on {'cuda:0' if self.tagged(value) else 'cpu'} into "
                                            f"a tensor on {'cuda:0' if self_cuda else 'cpu'} (virtual CUDA)")
            index = [t for t in tree_flatten(args[1])[0] if isinstance(t, torch.Tensor)]
            if not self_cuda and any(self.tagged(i) and not _int_scalar(i) for i in index):
                raise VirtualDeviceMismatch("indices on cuda:0 into a tensor on cpu (virtual CUDA)")
            return
        if name in _CROSS_OK:
            return
        # A 0-dim CPU tensor rides along with CUDA ones in element-wise ops, but not as the
        # in-place target, and not in ops that gather, join or multiply matrices.
        in_place = name.endswith("_") and not name.startswith("_") and tensors and not on_cuda[0]
        strict = name in _NO_SCALAR_EXEMPTION or in_place
        cpu = [t for t, c in zip(tensors, on_cuda) if not c and (strict or t.dim() > 0)]
        if any(on_cuda) and cpu:
            shapes = ", ".join(f"{'cuda' if c else 'cpu'}{tuple(t.shape)}" for t, c in zip(tensors, on_cuda))
            raise VirtualDeviceMismatch(
                f"Expected all tensors to be on the same device, but found at least two devices, cuda:0 and "
                f"cpu! ({name} of {shapes}; virtual CUDA)")

    def _move(self, func, name, args, kwargs, tensors, on_cuda):
        src = args[0]
        if name == "cuda":
            target = True
            rest_kwargs = {k: v for k, v in kwargs.items() if k == "non_blocking"}
            real = lambda: src.to("cpu", **rest_kwargs)  # noqa: E731
        elif name == "cpu":
            target = False
            real = lambda: src.to("cpu")  # noqa: E731
        else:
            rest = list(args[1:])
            if rest and isinstance(rest[0], torch.Tensor):  # .to(other): other's device and dtype
                other = rest.pop(0)
                target = self.tagged(other)
                rest_kwargs = {**kwargs, "dtype": other.dtype}
                rest_kwargs.pop("device", None)
                real = lambda: src.to(*rest, **rest_kwargs)  # noqa: E731
            else:
                device = kwargs.pop("device", None)
                if rest and isinstance(rest[0], (str, torch.device, int)):
                    device = rest.pop(0)
                target = on_cuda[0] if device is None else _is_cuda(device)
                if device is None:
                    real = lambda: src.to(*rest, **kwargs)  # noqa: E731
                else:
                    real = lambda: src.to("cpu", *rest, **kwargs)  # noqa: E731
        out = real()
        if target and not self.tagged(out):
            if _ptr(out) == _ptr(src):  # .to returned its (CPU) input: the move makes a copy
                out = out.clone()
            self.tag(out)
        elif not target and self.tagged(out):
            out = out.clone()
        return out

    def _attribute(self, func, name, args, kwargs):
        attr = getattr(func.__self__, "__name__", "")
        obj = args[0]
        if name == "__get__":
            if attr == "device":
                return CUDA if self.tagged(obj) else func(*args, **kwargs)
            if attr == "is_cuda":
                return self.tagged(obj)
            if attr == "is_cpu":
                return not self.tagged(obj)
            out = func(*args, **kwargs)
            if attr == "grad" and out is not None and self.tagged(obj) and not self.tagged(out):
                self.tag(out)  # autograd made it on the parameter's (virtual) device
            return out
        if attr == "grad" and args[1] is not None and self.tagged(obj) != self.tagged(args[1]):
            raise VirtualDeviceMismatch("assigned grad has data located on a different device (virtual CUDA)")
        return func(*args, **kwargs)


def _ptr(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return -1


@contextlib.contextmanager
def virtual_cuda(total_memory: int = 15 * 2**30):
    """Run the block as if a CUDA GPU of ``total_memory`` bytes were present (see the module doc)."""
    mode = _Mode()
    real_load = torch.load

    def load(*args, map_location=None, **kwargs):
        obj = real_load(*args, map_location="cpu", **kwargs)
        if isinstance(map_location, (str, torch.device, int)) and _is_cuda(map_location):
            obj = tree_map(lambda t: t.to("cuda") if isinstance(t, torch.Tensor) else t, obj)
        return obj

    def reset_peak(*a, **k):
        _BYTES["peak"] = _BYTES["now"]

    props = types.SimpleNamespace(total_memory=total_memory, name="virtual CUDA", major=8, minor=0,
                                  multi_processor_count=1)
    patches = {
        (torch, "Generator"): _Generator,
        (torch, "load"): load,
        (torch.cuda, "is_available"): lambda: True,
        (torch.cuda, "device_count"): lambda: 1,
        (torch.cuda, "current_device"): lambda: 0,
        (torch.cuda, "get_device_properties"): lambda *a, **k: props,
        (torch.cuda, "get_device_name"): lambda *a, **k: props.name,
        (torch.cuda, "synchronize"): lambda *a, **k: None,
        (torch.cuda, "empty_cache"): lambda *a, **k: None,
        (torch.cuda, "reset_peak_memory_stats"): reset_peak,
        (torch.cuda, "max_memory_allocated"): lambda *a, **k: _BYTES["peak"],
        (torch.cuda, "memory_allocated"): lambda *a, **k: _BYTES["now"],
        (torch.cuda, "mem_get_info"): lambda *a, **k: (total_memory - _BYTES["now"], total_memory),
        (torch.cuda, "is_bf16_supported"): lambda *a, **k: True,
        (torch.cuda, "manual_seed"): lambda *a, **k: None,
        (torch.cuda, "manual_seed_all"): lambda *a, **k: None,
    }
    saved = {key: getattr(*key) for key in patches}
    try:
        for (owner, attr), value in patches.items():
            setattr(owner, attr, value)
        with mode:
            yield mode
    finally:
        for (owner, attr), value in saved.items():
            setattr(owner, attr, value)
