"""A reader of Torch7's binary serialisation (``torch.save`` of Lua Torch, ``.t7`` files), and the
mapping of a saved ``nn`` module tree onto a PyTorch module by module order.

The format (torch7 ``File.lua`` ``writeObject`` / ``readObject``, binary mode, little endian):
every value starts with an int32 type tag:

    0 nil | 1 number: float64 | 5 boolean: int32 (1 = true) | 2 string: int32 length + bytes
    3 table, 4 torch object, 6 / 7 / 8 function: int32 reference index, then - unless the index
      was already read, in which case the value is that earlier object - the contents:
      table: int32 n, then n (key, value) pairs, each a value as above
      torch object: a version string "V <n>" (absent in files older than versioning) and the
        class name string; then
          torch.<T>Storage: int64 n, then n raw elements
          torch.<T>Tensor: int32 ndim, ndim int64 sizes, ndim int64 strides, int64 storage
            offset (1-based), then the storage (a value: usually a reference shared by views)
          any other class (nn.Linear, nn.Sequential, ...): a table value holding its fields
      function: int32 length + the dumped bytecode, then its upvalues (a value)

"long" is the C long of the machine that wrote the file: 8 bytes on the Linux / macOS machines
the released models come from (files written with 4-byte longs are refused with a clear error
when they do not parse).  Tensors come back as ``torch.Tensor`` (a copy), storages as NumPy
arrays, tables as dicts (``lua_list`` orders a 1..n table), objects of other classes as
``TorchObject`` (class name + fields), functions as ``LuaFunction`` (kept unread).
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np
import torch

TYPE_NIL, TYPE_NUMBER, TYPE_STRING, TYPE_TABLE, TYPE_TORCH, TYPE_BOOLEAN = 0, 1, 2, 3, 4, 5
TYPE_FUNCTION, TYPE_LEGACY_RECUR_FUNCTION, TYPE_RECUR_FUNCTION = 6, 7, 8
_REFERENCED = (TYPE_TABLE, TYPE_TORCH, TYPE_FUNCTION, TYPE_LEGACY_RECUR_FUNCTION, TYPE_RECUR_FUNCTION)

_ELEMENT = {"Byte": np.uint8, "Char": np.int8, "Short": np.int16, "Int": np.int32, "Long": np.int64,
            "Float": np.float32, "Double": np.float64, "Half": np.float16,
            # cutorch writes its float tensors as torch.Cuda{Tensor,Storage}
            "Cuda": np.float32, "CudaByte": np.uint8, "CudaChar": np.int8, "CudaShort": np.int16,
            "CudaInt": np.int32, "CudaLong": np.int64, "CudaDouble": np.float64, "CudaHalf": np.float16}


class Torch7FormatError(ValueError):
    """A file that is not a (readable) Torch7 binary serialisation."""


@dataclass(eq=False)
class TorchObject:
    """An instance of a Torch class other than tensors / storages: its class name and fields."""

    class_name: str
    fields: dict = field(default_factory=dict)
    version: int = 0

    def __getitem__(self, key):
        return self.fields[key]

    def get(self, key, default=None):
        return self.fields.get(key, default)


@dataclass(eq=False)
class LuaFunction:
    bytecode: bytes
    upvalues: object


def _element_type(class_name: str, kind: str):
    prefix = class_name[len("torch."):-len(kind)]
    return _ELEMENT.get(prefix)


class _Reader:
    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.what = memoryview(data), 0, what
        self.objects: dict[int, object] = {}

    def fail(self, message: str):
        raise Torch7FormatError(f"{self.what}: {message} (at byte {self.pos} of {len(self.data)})")

    def unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            self.fail(f"the file ends inside a value (needed {size} more bytes): truncated or not a Torch7 file")
        out = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return out

    def int(self) -> int:
        return self.unpack("<i")[0]

    def long(self) -> int:
        return self.unpack("<q")[0]

    def raw(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            self.fail(f"a length of {n} bytes runs past the end of the file: truncated or not a Torch7 file")
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return out

    def string(self) -> str:
        return self.raw(self.int()).decode("latin1")

    def value(self):
        start = self.pos
        tag = self.int()
        if tag == TYPE_NIL:
            return None
        if tag == TYPE_NUMBER:
            x = self.unpack("<d")[0]
            return int(x) if x.is_integer() and abs(x) < 2 ** 53 else x
        if tag == TYPE_BOOLEAN:
            return self.int() == 1
        if tag == TYPE_STRING:
            return self.string()
        if tag not in _REFERENCED:
            self.pos = start
            self.fail(f"unknown type tag {tag} (expected 0-8)")
        index = self.int()
        if index in self.objects:  # a reference to an object read before
            return self.objects[index]
        if tag == TYPE_TABLE:
            table: dict = {}
            self.objects[index] = table  # registered first: a table may contain itself
            n = self.int()
            if n < 0:
                self.fail(f"a table of {n} entries")
            for _ in range(n):
                key = self.value()
                if isinstance(key, (dict, TorchObject, torch.Tensor, np.ndarray, LuaFunction)):
                    key = id(key)  # Lua allows any key; a non-string key of an nn table is never needed
                table[key] = self.value()
            return table
        if tag == TYPE_TORCH:
            return self.torch_object(index)
        fn = LuaFunction(self.raw(self.int()), None)
        self.objects[index] = fn
        fn.upvalues = self.value()
        return fn

    def torch_object(self, index: int):
        version_or_class = self.string()
        version = 0
        class_name = version_or_class
        if version_or_class.startswith("V "):
            try:
                version = int(float(version_or_class[2:]))
            except ValueError:
                self.fail(f"bad version string {version_or_class!r}")
            class_name = self.string()
        if not class_name or not class_name.isprintable():
            self.fail(f"bad class name {class_name[:40]!r}")
        if class_name.startswith("torch.") and class_name.endswith("Storage"):
            dtype = _element_type(class_name, "Storage")
            if dtype is None:
                self.fail(f"unsupported storage class {class_name}")
            n = self.long()
            if n < 0:
                self.fail(f"{class_name} of {n} elements")
            arr = np.frombuffer(self.raw(n * np.dtype(dtype).itemsize), dtype=np.dtype(dtype).newbyteorder("<"))
            self.objects[index] = arr
            return arr
        if class_name.startswith("torch.") and class_name.endswith("Tensor"):
            dtype = _element_type(class_name, "Tensor")
            if dtype is None:
                self.fail(f"unsupported tensor class {class_name}")
            tensor = self.tensor(class_name, dtype)
            self.objects[index] = tensor
            return tensor
        obj = TorchObject(class_name, {}, version)
        self.objects[index] = obj  # before its fields: they may refer back to it
        fields = self.value()
        if not isinstance(fields, dict):
            self.fail(f"{class_name}: expected a table of fields, got {type(fields).__name__}")
        obj.fields = fields
        return obj

    def tensor(self, class_name: str, dtype) -> torch.Tensor:
        ndim = self.int()
        if not 0 <= ndim <= 64:
            self.fail(f"{class_name} with {ndim} dimensions")
        sizes = [self.long() for _ in range(ndim)]
        strides = [self.long() for _ in range(ndim)]
        offset = self.long() - 1
        storage = self.value()
        if ndim == 0 or storage is None:
            return torch.empty(0, dtype=torch.from_numpy(np.zeros(0, dtype)).dtype)
        if not isinstance(storage, np.ndarray) or storage.dtype != np.dtype(dtype):
            self.fail(f"{class_name}: its storage is {type(storage).__name__} "
                      f"{getattr(storage, 'dtype', '')}, expected {np.dtype(dtype)} elements")
        if any(s < 0 for s in sizes) or any(s < 0 for s in strides) or offset < 0:
            self.fail(f"{class_name}: bad sizes {sizes} / strides {strides} / offset {offset + 1}")
        if 0 not in sizes:
            last = offset + sum((n - 1) * s for n, s in zip(sizes, strides))
            if last >= storage.shape[0]:
                self.fail(f"{class_name} of sizes {sizes}, strides {strides}, offset {offset + 1} reaches element "
                          f"{last + 1} of a storage of {storage.shape[0]}")
        view = np.lib.stride_tricks.as_strided(storage[offset:], shape=sizes,
                                               strides=[s * storage.itemsize for s in strides])
        return torch.from_numpy(np.array(view, dtype=np.dtype(dtype).newbyteorder("=")))


def read_torch7(source, what: str | None = None):
    """The object a Torch7 ``torch.save`` wrote (binary mode): a path, bytes or a binary file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, what = bytes(source), what or "Torch7 data"
    elif isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"Torch7 file not found: {source}")
        with open(source, "rb") as f:
            data = f.read()
        what = what or os.fspath(source)
    else:
        data, what = source.read(), what or "Torch7 stream"
    reader = _Reader(data, what)
    obj = reader.value()
    if reader.pos != len(data):
        reader.fail(f"{len(data) - reader.pos} bytes after the object (not a single torch.save)")
    return obj


def lua_list(table) -> list:
    """A Lua array (a table with keys 1..n) as a Python list."""
    if table is None:
        return []
    if not isinstance(table, dict) or set(table) != set(range(1, len(table) + 1)):
        raise Torch7FormatError(f"expected a Lua array (keys 1..n), got keys {sorted(map(str, table))[:8]}")
    return [table[i] for i in range(1, len(table) + 1)]


# ----------------------------------------------------------------------------- nn module trees

# Torch class (nn.*, cudnn.*) -> the PyTorch module it corresponds to
TORCH7_CLASSES = {
    "Linear": torch.nn.Linear,
    "SpatialConvolution": torch.nn.Conv2d, "SpatialConvolutionMM": torch.nn.Conv2d,
    "SpatialFullConvolution": torch.nn.ConvTranspose2d,
    "SpatialBatchNormalization": torch.nn.BatchNorm2d,
    "BatchNormalization": torch.nn.BatchNorm1d,
}


def _short(class_name: str) -> str:
    return class_name.split(".", 1)[1] if class_name.startswith(("nn.", "cudnn.")) else class_name


def parameter_modules(root) -> list[TorchObject]:
    """The modules with parameters of an nn tree, depth first in ``modules`` order (the order the
    Lua script added them).  A module with weights of an unknown class is an error."""
    if not isinstance(root, TorchObject):
        raise Torch7FormatError(f"expected an nn module at the top of the file, got {type(root).__name__}")
    out: list[TorchObject] = []

    def visit(m, path):
        if not isinstance(m, TorchObject):
            raise Torch7FormatError(f"{path}: expected an nn module, got {type(m).__name__}")
        if _short(m.class_name) in TORCH7_CLASSES:
            out.append(m)
        elif isinstance(m.get("weight"), torch.Tensor):
            raise Torch7FormatError(f"{path}: {m.class_name} has weights but is not a module this mapping knows "
                                    f"({', '.join(sorted(TORCH7_CLASSES))})")
        for i, child in enumerate(lua_list(m.get("modules")), 1):
            visit(child, f"{path}.modules[{i}]")

    visit(root, root.class_name)
    return out


def state_dict_from_torch7(model: torch.nn.Module, root, what: str) -> tuple[dict, dict]:
    """Map a saved nn tree onto ``model`` by module order: the k-th Linear / convolution / BN of the
    tree gives the k-th of ``model.modules()``, kinds and shapes checked.  -> (state dict, dropped
    convolution biases {name: max |b|}) - biases the file has where ``model`` has none."""
    ours = [(n, m) for n, m in model.named_modules() if type(m) in TORCH7_CLASSES.values()]
    theirs = parameter_modules(root)
    if len(ours) != len(theirs):
        raise ValueError(f"{what}: {len(theirs)} modules with parameters in the file "
                         f"({', '.join(_short(t.class_name) for t in theirs)}), {type(model).__name__} has "
                         f"{len(ours)} ({', '.join(type(m).__name__ for _, m in ours)})")
    state = dict(model.state_dict())
    dropped: dict[str, float] = {}
    for k, ((name, mod), t) in enumerate(zip(ours, theirs), 1):
        expected = TORCH7_CLASSES[_short(t.class_name)]
        if type(mod) is not expected:
            raise ValueError(f"{what}: parameter module {k} is {t.class_name} in the file but {name} is "
                             f"{type(mod).__name__} (expected {expected.__name__})")
        prefix = f"{name}." if name else ""
        is_bn = isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)
        fields = ["weight", "bias"] + (["running_mean", "running_var"] if is_bn else [])
        for f in fields:
            target = state.get(prefix + f)
            value = t.get(f)
            if f == "running_var" and value is None and isinstance(t.get("running_std"), torch.Tensor):
                # BN files of nn before version 2 keep 1 / sqrt(var + eps) (nn's own reader converts so)
                value = t["running_std"].double().pow(-2).sub(float(t.get("eps", mod.eps))).to(t["running_std"].dtype)
            if target is None:
                if f == "bias" and isinstance(value, torch.Tensor) and value.numel():
                    dropped[prefix + f] = float(value.abs().max())
                    continue
                if value is None:
                    continue
                raise ValueError(f"{what}: {t.class_name} (module {k}) has a {f} that {name} has not")
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{what}: {t.class_name} (module {k}, for {name}) has no {f} tensor")
            if value.shape != target.shape:
                if value.numel() == target.numel() and value.dim() == 2 and isinstance(mod, torch.nn.Conv2d):
                    value = value.reshape(target.shape)  # SpatialConvolutionMM keeps (out, in * kH * kW)
                else:
                    raise ValueError(f"{what}: {t.class_name} (module {k}) {f} has shape {tuple(value.shape)}, "
                                     f"{prefix + f} expects {tuple(target.shape)}")
            state[prefix + f] = value.to(target.dtype)
        if is_bn and abs(float(t.get("eps", mod.eps)) - mod.eps) > 1e-12:
            raise ValueError(f"{what}: {t.class_name} (module {k}) has eps {t.get('eps')}, {name} uses {mod.eps}")
    return state, dropped
