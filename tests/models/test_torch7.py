"""fastt2i's Torch7 reader and the GAN-INT-CLS .t7 mapping, on bytes written by an independent
writer here (the format of torch7 File.lua's writeObject, binary mode), as no released .t7 is
available to the tests: values, references, tensors sharing a storage, the Lua nn trees of
main_cls_int.lua, evaluated by a small interpreter of the Lua modules, and corrupt files."""
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastt2i.models import gan_int_cls as ours
from fastt2i.models._torch7 import (LuaFunction, Torch7FormatError, TorchObject, lua_list, parameter_modules,
                                    read_torch7)


# ----------------------------------------------------------------------------- an independent writer

class Obj:
    """A Lua object to write: an nn / torch class with a table of fields."""

    def __init__(self, cls, **fields):
        self.cls, self.fields = cls, fields


class Storage:
    def __init__(self, array, cls="torch.FloatStorage"):
        self.array, self.cls = np.ascontiguousarray(array).reshape(-1), cls


class Tensor:
    def __init__(self, storage, size, stride=None, offset=0, cls="torch.FloatTensor"):
        if stride is None:
            stride, acc = [], 1
            for n in reversed(size):
                stride.insert(0, acc)
                acc *= n
        self.storage, self.size, self.stride, self.offset, self.cls = storage, list(size), list(stride), offset, cls


class Table(dict):
    __hash__ = object.__hash__


class Function:
    def __init__(self, code, upvalues):
        self.code, self.upvalues = code, upvalues


class Writer:
    def __init__(self, versioned=True):
        self.out, self.index, self.versioned = bytearray(), {}, versioned
        self.alive = []  # keeps written objects alive, so that no id is reused within one file

    def i32(self, v):
        self.out += struct.pack("<i", v)

    def i64(self, v):
        self.out += struct.pack("<q", v)

    def string(self, s):
        b = s.encode("latin1") if isinstance(s, str) else s
        self.i32(len(b))
        self.out += b

    def ref(self, tag, obj) -> bool:
        """Tag + reference index; True when the object was written before (only the index then)."""
        self.i32(tag)
        seen = id(obj) in self.index
        if not seen:
            self.index[id(obj)] = len(self.index) + 1
            self.alive.append(obj)
        self.i32(self.index[id(obj)])
        return seen

    def header(self, cls):
        if self.versioned:
            self.string("V 1")
        self.string(cls)

    def write(self, v):
        if v is None:
            self.i32(0)
        elif isinstance(v, bool):
            self.i32(5)
            self.i32(1 if v else 0)
        elif isinstance(v, (int, float)):
            self.i32(1)
            self.out += struct.pack("<d", float(v))
        elif isinstance(v, str):
            self.i32(2)
            self.string(v)
        elif isinstance(v, (list, Table, dict)):
            if self.ref(3, v):
                return
            items = list(enumerate(v, 1)) if isinstance(v, list) else list(v.items())
            self.i32(len(items))
            for k, x in items:
                self.write(k)
                self.write(x)
        elif isinstance(v, Storage):
            if self.ref(4, v):
                return
            self.header(v.cls)
            self.i64(v.array.size)
            self.out += v.array.astype(v.array.dtype.newbyteorder("<")).tobytes()
        elif isinstance(v, Tensor):
            if self.ref(4, v):
                return
            self.header(v.cls)
            self.i32(len(v.size))
            for n in v.size:
                self.i64(n)
            for s in v.stride:
                self.i64(s)
            self.i64(v.offset + 1)
            self.write(v.storage)
        elif isinstance(v, Obj):
            if self.ref(4, v):
                return
            self.header(v.cls)
            self.write(Table(v.fields))
        elif isinstance(v, Function):
            if self.ref(6, v):
                return
            self.string(v.code)
            self.write(v.upvalues)
        else:
            raise TypeError(type(v))


def t7_bytes(obj, **kw) -> bytes:
    w = Writer(**kw)
    w.write(obj)
    return bytes(w.out)


def tensor(array, cls="torch.FloatTensor", storage_cls="torch.FloatStorage"):
    array = np.asarray(array, dtype=np.float32)
    return Tensor(Storage(array, storage_cls), array.shape, cls=cls)


# ----------------------------------------------------------------------------- main_cls_int.lua's trees

class LuaNets:
    """netG / netD as main_cls_int.lua builds them (tiny sizes), random weights, conv biases zero."""

    def __init__(self, ngf=8, ndf=8, nz=6, nt=5, txt=12, seed=0, prefix="nn.", cuda=False):
        self.rng = np.random.default_rng(seed)
        self.prefix = prefix
        self.cuda = cuda
        self.nz, self.nt, self.txt = nz, nt, txt
        P = prefix
        fcG = self.seq(self.linear(txt, nt), Obj("nn.LeakyReLU", negval=0.2, inplace=True))
        self.netG = self.seq(
            Obj("nn.ParallelTable", modules=[Obj("nn.Identity"), fcG]), Obj("nn.JoinTable", dimension=2),
            self.full(nz + nt, ngf * 8, 1, 0), self.bn(ngf * 8),
            self.residual(ngf * 8, ngf * 2, "relu"), Obj("nn.CAddTable"), Obj(P + "ReLU"),
            self.full(ngf * 8, ngf * 4, 2, 1), self.bn(ngf * 4),
            self.residual(ngf * 4, ngf, "relu"), Obj("nn.CAddTable"), Obj(P + "ReLU"),
            self.full(ngf * 4, ngf * 2, 2, 1), self.bn(ngf * 2), Obj(P + "ReLU"),
            self.full(ngf * 2, ngf, 2, 1), self.bn(ngf), Obj(P + "ReLU"),
            self.full(ngf, 3, 2, 1), Obj(P + "Tanh"))
        convD = self.seq(
            self.conv(3, ndf, 4, 2, 1), Obj("nn.LeakyReLU", negval=0.2),
            self.conv(ndf, ndf * 2, 4, 2, 1), self.bn(ndf * 2), Obj("nn.LeakyReLU", negval=0.2),
            self.conv(ndf * 2, ndf * 4, 4, 2, 1), self.bn(ndf * 4),
            self.conv(ndf * 4, ndf * 8, 4, 2, 1), self.bn(ndf * 8),
            Obj("nn.ConcatTable", modules=[Obj("nn.Identity")]),  # conc:add(skipD) with skipD nil
            Obj("nn.CAddTable"), Obj("nn.LeakyReLU", negval=0.2))
        fcD = self.seq(self.linear(txt, nt), self.bn(nt, "BatchNormalization"), Obj("nn.LeakyReLU", negval=0.2),
                       Obj("nn.Replicate", nfeatures=4, dim=3), Obj("nn.Replicate", nfeatures=4, dim=4))
        self.netD = self.seq(
            Obj("nn.ParallelTable", modules=[convD, fcD]), Obj("nn.JoinTable", dimension=2),
            self.conv(ndf * 8 + nt, ndf * 8, 1, 1, 0), self.bn(ndf * 8), Obj("nn.LeakyReLU", negval=0.2),
            self.conv(ndf * 8, 1, 4, 1, 0), Obj(P + "Sigmoid"), Obj("nn.View", size=[1], numInputDims=3))

    def t(self, array):
        cls = ("torch.CudaTensor", "torch.CudaStorage") if self.cuda else ("torch.FloatTensor", "torch.FloatStorage")
        return tensor(array, *cls)

    def seq(self, *modules):
        return Obj("nn.Sequential", modules=list(modules), train=True)

    def conv(self, cin, cout, k, s, p):
        return Obj(self.prefix + "SpatialConvolution", nInputPlane=cin, nOutputPlane=cout, kW=k, kH=k, dW=s, dH=s,
                   padW=p, padH=p, weight=self.t(self.rng.normal(0, 0.2, (cout, cin, k, k))),
                   bias=self.t(np.zeros(cout)), gradWeight=self.t(np.zeros((cout, cin, k, k))))

    def full(self, cin, cout, s, p):
        return Obj(self.prefix + "SpatialFullConvolution", nInputPlane=cin, nOutputPlane=cout, kW=4, kH=4, dW=s,
                   dH=s, padW=p, padH=p, adjW=0, adjH=0,
                   weight=self.t(self.rng.normal(0, 0.2, (cin, cout, 4, 4))), bias=self.t(np.zeros(cout)))

    def bn(self, c, kind="SpatialBatchNormalization"):
        return Obj(self.prefix + kind, eps=1e-5, momentum=0.1, affine=True, train=True,
                   weight=self.t(self.rng.normal(1, 0.1, c)), bias=self.t(self.rng.normal(0, 0.1, c)),
                   running_mean=self.t(self.rng.normal(0, 0.1, c)), running_var=self.t(self.rng.uniform(0.5, 2, c)))

    def linear(self, cin, cout):
        return Obj("nn.Linear", weight=self.t(self.rng.normal(0, 0.2, (cout, cin))),
                   bias=self.t(self.rng.normal(0, 0.1, cout)))

    def residual(self, c, inner, act):
        a = Obj(self.prefix + "ReLU")
        conv = self.seq(self.conv(c, inner, 1, 1, 0), self.bn(inner), a, self.conv(inner, inner, 3, 1, 1),
                        self.bn(inner), a, self.conv(inner, c, 3, 1, 1), self.bn(c))  # one ReLU object twice
        return Obj("nn.ConcatTable", modules=[Obj("nn.Identity"), conv])


def run_lua(m: TorchObject, x):
    """The forward of a (read back) Lua nn tree in evaluation mode, module by module."""
    name = m.class_name.split(".", 1)[1]
    f = m.fields
    if name == "Sequential":
        for child in lua_list(f["modules"]):
            x = run_lua(child, x)
        return x
    if name == "ParallelTable":
        return [run_lua(c, xi) for c, xi in zip(lua_list(f["modules"]), x)]
    if name == "ConcatTable":
        return [run_lua(c, x) for c in lua_list(f["modules"])]
    if name == "JoinTable":
        parts = [p.reshape(p.shape[0], -1, 1, 1) if p.dim() == 2 else p for p in x]
        return torch.cat(parts, f["dimension"] - 1)
    if name == "CAddTable":
        return sum(x[1:], x[0])
    if name == "Identity":
        return x
    if name == "ReLU":
        return F.relu(x)
    if name == "LeakyReLU":
        return F.leaky_relu(x, f["negval"])
    if name == "Tanh":
        return torch.tanh(x)
    if name == "Sigmoid":
        return torch.sigmoid(x)
    if name == "Linear":
        return x @ f["weight"].T + f["bias"]
    if name == "SpatialConvolution":
        return F.conv2d(x, f["weight"], f["bias"], f["dW"], f["padW"])
    if name == "SpatialFullConvolution":
        return F.conv_transpose2d(x, f["weight"], f["bias"], f["dW"], f["padW"])
    if name in ("SpatialBatchNormalization", "BatchNormalization"):
        return F.batch_norm(x, f["running_mean"], f["running_var"], f["weight"], f["bias"], False, 0.0, f["eps"])
    if name == "Replicate":
        return x.unsqueeze(f["dim"] - 1).expand(*x.shape[:f["dim"] - 1], f["nfeatures"], *x.shape[f["dim"] - 1:])
    if name == "View":
        return x.reshape(x.shape[0])
    raise ValueError(f"the test interpreter of Lua nn trees has no rule for nn.{name}")


# ----------------------------------------------------------------------------- the reader

def test_values_tables_references_and_functions():
    shared = Table({"x": 1.5})
    store = Storage(np.arange(12, dtype=np.float64), "torch.DoubleStorage")
    whole = Tensor(store, [3, 4], cls="torch.DoubleTensor")
    column = Tensor(store, [3], stride=[4], offset=1, cls="torch.DoubleTensor")  # a strided view of the same storage
    cyclic = Table({"name": "self"})
    cyclic["me"] = cyclic
    fn = Function(b"\x1bLua bytecode", Table({1: 7}))
    obj = Table({1: 3, 2: -2.25, 3: "héllo", 4: True, 5: False, "a": shared, "b": shared,
                 "t": whole, "c": column, "cyc": cyclic, "f": fn, "ints": Tensor(Storage(np.array([5, 6], np.int64),
                                                                                          "torch.LongStorage"), [2],
                                                                                  cls="torch.LongTensor"),
                 "obj": Obj("nn.Identity", train=True)})
    for versioned in (True, False):
        back = read_torch7(t7_bytes(obj, versioned=versioned))
        assert back[1] == 3 and isinstance(back[1], int) and back[2] == -2.25 and back[3] == "héllo"
        assert back[4] is True and back[5] is False
        assert back["a"] is back["b"] and back["a"] == {"x": 1.5}
        assert back["cyc"]["me"] is back["cyc"]
        assert torch.equal(back["t"], torch.arange(12, dtype=torch.float64).reshape(3, 4))
        assert torch.equal(back["c"], torch.tensor([1.0, 5.0, 9.0], dtype=torch.float64))
        assert back["ints"].dtype == torch.int64 and back["ints"].tolist() == [5, 6]
        assert isinstance(back["f"], LuaFunction) and back["f"].bytecode == b"\x1bLua bytecode"
        assert back["f"].upvalues == {1: 7}
        assert isinstance(back["obj"], TorchObject) and back["obj"].class_name == "nn.Identity"
        assert back["obj"]["train"] is True


def test_corrupt_files_are_clear_errors(tmp_path):
    good = t7_bytes(LuaNets().netG)
    with pytest.raises(Torch7FormatError, match="truncated"):
        read_torch7(good[: len(good) // 2])
    with pytest.raises(Torch7FormatError, match="unknown type tag 77"):
        read_torch7(struct.pack("<i", 77) + good[4:])
    with pytest.raises(Torch7FormatError, match="bytes after the object"):
        read_torch7(good + b"\0\0\0\0")
    with pytest.raises(Torch7FormatError, match="reaches element"):
        read_torch7(t7_bytes(Tensor(Storage(np.zeros(4, np.float32)), [3, 3])))
    with pytest.raises(Torch7FormatError, match="unsupported storage"):
        read_torch7(t7_bytes(Storage(np.zeros(2, np.float32), "torch.QuuxStorage")))
    with pytest.raises(Torch7FormatError):
        read_torch7(torch.zeros(3).numpy().tobytes() + b"not a t7 file at all")
    path = tmp_path / "netG.t7"
    path.write_bytes(good[:-3])
    with pytest.raises(Torch7FormatError, match="netG.t7"):
        ours.load_torch7(ours.Generator(8, 6, 5, 12), path)
    with pytest.raises(FileNotFoundError):
        read_torch7(tmp_path / "missing.t7")


# ----------------------------------------------------------------------------- GAN-INT-CLS .t7 -> ours

@pytest.mark.parametrize("prefix,cuda", [("nn.", False), ("cudnn.", True)])
def test_lua_generator_and_discriminator_load_and_agree(prefix, cuda, tmp_path):
    lua = LuaNets(prefix=prefix, cuda=cuda, seed=1)
    (tmp_path / "netG.t7").write_bytes(t7_bytes(lua.netG))
    (tmp_path / "netD.t7").write_bytes(t7_bytes(lua.netD))
    netG, netD = ours.Generator(8, 6, 5, 12), ours.Discriminator(8, 5, 12)
    dropped = ours.load_torch7(netG, tmp_path / "netG.t7")  # the file's zero conv biases: dropped, silently
    assert len(dropped) == 5 + 6 and set(dropped.values()) == {0.0}
    ours.load_official_state_dict(netD, str(tmp_path / "netD.t7"))
    g_tree, d_tree = read_torch7(tmp_path / "netG.t7"), read_torch7(tmp_path / "netD.t7")
    # by hand from the script: the Linear of fcG, the first full conv, a residual conv, the RGB full conv
    assert torch.equal(netG.text_proj[0].weight, lua_list(lua_list(g_tree["modules"])[0]["modules"])[1]["modules"][1]
                       ["weight"])
    assert torch.equal(netG.stem[0].weight, lua_list(g_tree["modules"])[2]["weight"])
    assert torch.equal(netG.res8.branch[3].weight, lua_list(lua_list(lua_list(g_tree["modules"])[9]["modules"])[1]
                                                            ["modules"])[3]["weight"])
    assert torch.equal(netG.to_rgb[0].weight, lua_list(g_tree["modules"])[-2]["weight"])
    netG.eval(), netD.eval()
    noise, txt = torch.randn(3, 6), torch.randn(3, 12)
    with torch.no_grad():
        want = run_lua(g_tree, [noise.reshape(3, 6, 1, 1), txt])
        got = netG(noise, txt)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        img = torch.randn(3, 3, 64, 64)
        torch.testing.assert_close(torch.sigmoid(netD(img, txt)), run_lua(d_tree, [img, txt]), rtol=1e-5, atol=1e-6)


def test_mapping_errors_and_old_files(tmp_path):
    lua = LuaNets(seed=2)
    netG = ours.Generator(8, 6, 5, 12)
    with pytest.raises(ValueError, match="modules with parameters"):
        ours.load_torch7(ours.Discriminator(8, 5, 12), t7_bytes(lua.netG))
    with pytest.raises(ValueError, match="shape"):
        ours.load_torch7(ours.Generator(16, 6, 5, 12), t7_bytes(lua.netG))
    swapped = LuaNets(seed=2)
    seq = swapped.netG.fields["modules"]
    seq[2], seq[3] = seq[3], seq[2]  # BN before the full convolution
    with pytest.raises(ValueError, match="SpatialBatchNormalization in the file"):
        ours.load_torch7(netG, t7_bytes(swapped.netG))
    odd = LuaNets(seed=2)
    odd.netG.fields["modules"].insert(2, Obj("nn.Mystery", weight=tensor(np.ones(3))))
    with pytest.raises(Torch7FormatError, match="nn.Mystery has weights"):
        ours.load_torch7(netG, t7_bytes(odd.netG))
    with pytest.raises(Torch7FormatError, match="nn module at the top"):
        ours.load_torch7(netG, t7_bytes(Table({1: 2})))
    # nn before version 2 stored BN's 1 / sqrt(var + eps) as running_std; a trained net's last bias step
    old = LuaNets(seed=3)
    first_bn = old.netG.fields["modules"][3]
    var = first_bn.fields.pop("running_var").storage.array.copy()
    first_bn.fields["running_std"] = tensor(1 / np.sqrt(var + 1e-5))
    old.netG.fields["modules"][2].fields["bias"] = tensor(np.full(64, 3e-4))
    with pytest.warns(UserWarning, match="0.0003"):
        dropped = ours.load_torch7(netG, t7_bytes(old.netG))
    assert dropped["stem.0.bias"] == pytest.approx(3e-4)
    torch.testing.assert_close(netG.stem[1].running_var, torch.from_numpy(var), rtol=1e-4, atol=1e-6)
    assert len(parameter_modules(read_torch7(t7_bytes(old.netG)))) == 1 + 1 + 1 + 6 + 2 + 6 + 2 + 2 + 1


def test_sampling_from_a_lua_generator(tmp_path):
    """`fastt2i sample gan-int-cls --checkpoint netG.t7 --embeddings ...` goes through the same loader."""
    from fastt2i.models import GANINTCLSConfig
    from fastt2i.train.families.gan_int_cls import image_sampler

    lua = LuaNets(seed=4, txt=1024)
    (tmp_path / "netG.t7").write_bytes(t7_bytes(lua.netG))
    cfg = GANINTCLSConfig(ngf=8, ndf=8, nz=6, nt=5)
    sampler = image_sampler(str(tmp_path / "netG.t7"), config=cfg)
    emb = torch.randn(2, 1024)
    images = sampler(generator=torch.Generator().manual_seed(0), embeddings=emb)
    noise = torch.randn(2, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = run_lua(read_torch7(tmp_path / "netG.t7"), [noise.reshape(2, 6, 1, 1), emb])
    torch.testing.assert_close(images, want, rtol=1e-5, atol=1e-6)
    from fastt2i.train.families.stackgan import image_sampler as stackgan_sampler

    with pytest.raises(ValueError, match="Torch7"):
        stackgan_sampler(str(tmp_path / "netG.t7"), config=None)
