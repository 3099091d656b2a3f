"""The family-independent training core, the family registry and the CLI built from it.

A toy family (a bag-of-words conditional MLP GAN, written here in a few lines) plugs into the
core exactly as DF-GAN does: it proves that a family is a model plus a step, and that the core's
exact resume, evaluation hook and checkpoint checks hold for any family.
"""
import json
import os
from dataclasses import asdict, dataclass, replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastt2i.cli import main as cli_main
from fastt2i.models import CheckpointLayout, DFGANConfig, FamilyMismatchError, StateDictMismatchError
from fastt2i.models import _checkpoint as model_checkpoints
from fastt2i.text import EmptyCaptionError
from fastt2i.train import (
    CheckpointError,
    DFGANTrainer,
    Family,
    TrainConfig,
    Trainer,
    get_family,
    load_checkpoint,
    register_family,
    registered_families,
)
from fastt2i.train import registry

TINY = dict(imsize=32, ngf=4, ndf=4, batch_size=4)


# ----------------------------------------------------------------------------- a toy family

@dataclass
class ToyConfig:
    imsize: int = 16
    words_num: int = 18
    batch_size: int = 4
    max_epoch: int = 1
    nz: int = 8
    hidden: int = 32

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @classmethod
    def preset(cls, name, **kw):
        return replace(cls(), **kw)


class ToyG(nn.Module):
    def __init__(self, c: ToyConfig, vocab_size: int):
        super().__init__()
        self.c = c
        self.net = nn.Sequential(nn.Linear(c.nz + vocab_size, c.hidden), nn.ReLU(), nn.Linear(c.hidden, 3 * c.imsize ** 2))

    def forward(self, z, bag):
        return torch.tanh(self.net(torch.cat((z, bag), 1))).view(-1, 3, self.c.imsize, self.c.imsize)


class ToyD(nn.Module):
    def __init__(self, c: ToyConfig, vocab_size: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3 * c.imsize ** 2 + vocab_size, c.hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(c.hidden, 1))

    def forward(self, x, bag):
        return self.net(torch.cat((x.flatten(1), bag), 1))


TOY_LAYOUT = CheckpointLayout(family="toy", title="Toy-GAN", networks={"G": ("nets", "G"), "D": ("nets", "D")},
                              optimizers={"G": ("opts", "G"), "D": ("opts", "D")}, classes={"G": ToyG, "D": ToyD},
                              signatures={"G": ("net.0.", "net.2.")})


class ToyTrainer(Trainer):
    family, title, layout, config_class = "toy", "Toy-GAN", TOY_LAYOUT, ToyConfig
    architecture_fields = ("imsize", "nz", "hidden")
    progress_keys = ("lossD", "lossG")
    ema_network = "G"

    def build(self):
        self.netG, self.netD = ToyG(self.mcfg, len(self.vocab)), ToyD(self.mcfg, len(self.vocab))
        self.G = self.add_network("G", self.netG)
        self.D = self.add_network("D", self.netD)
        self.add_optimizer("G", torch.optim.Adam(self.netG.parameters(), 1e-3, betas=(0.5, 0.999)))
        self.add_optimizer("D", torch.optim.Adam(self.netD.parameters(), 1e-3, betas=(0.5, 0.999)))

    def bag(self, ids):
        return F.one_hot(ids, len(self.vocab)).sum(1).clamp(max=1).float().to(self.device)

    def run_step(self, batch):
        imgs, caps = batch[0].to(self.device), self.bag(batch[1])
        z = torch.randn(imgs.shape[0], self.mcfg.nz, generator=self.step_generator()).to(self.device)
        with self.autocast():
            fake = self.G(z, caps)
            lossD = F.softplus(-self.D(imgs, caps)).mean() + F.softplus(self.D(fake.detach(), caps)).mean()
        self.optimizer_step("D", lossD)
        with self.no_sync(self.D), self.autocast():
            lossG = F.softplus(-self.D(fake, caps)).mean()
        self.optimizer_step("G", lossG, inputs=list(self.netG.parameters()))
        return {"lossD": lossD.item(), "lossG": lossG.item()}

    def sample(self, captions, generator=None):
        ids, _ = self.vocab.encode_batch(captions)
        z = torch.randn(len(captions), self.mcfg.nz, generator=generator).to(self.device)
        net = self.ema if self.ema is not None else self.netG
        with torch.no_grad():
            return net(z, self.bag(ids)).float()


@pytest.fixture
def toy_family(monkeypatch):
    """The toy family registered for one test (registry and layouts restored afterwards)."""
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    monkeypatch.setattr(model_checkpoints, "_LAYOUTS", dict(model_checkpoints._LAYOUTS))
    registered_families()  # discover the built-in families first
    model_checkpoints.register_layout(TOY_LAYOUT)
    return register_family(Family(name="toy", summary="a toy bag-of-words MLP GAN", trainer=ToyTrainer,
                                  presets=("synthetic",), model_config=lambda a, p: ToyConfig.preset(p)))


def _toy(out, **kw):
    tc = dict(data="synthetic:24", out_dir=str(out), steps=2, save_every=100, progress=False, num_samples=4, seed=3)
    tc.update(kw)
    return ToyTrainer(ToyConfig(), TrainConfig(**tc))


def _dfgan(out, evaluators=(), **kw):
    tc = dict(data="synthetic:24", out_dir=str(out), steps=2, save_every=100, progress=False, num_samples=4, seed=5)
    tc.update(kw)
    return DFGANTrainer(DFGANConfig.synthetic(**TINY), TrainConfig(**tc), evaluators=evaluators)


def _state(trainer):
    return {f"{k}.{n}": v.clone() for k, net in trainer.networks.items() for n, v in net.state_dict().items()}


# ----------------------------------------------------------------------------- the core with any family

def test_a_new_family_is_a_model_and_a_step_with_exact_resume(tmp_path, toy_family):
    a = _toy(tmp_path / "a", steps=3, save_every=2, ema=0.9)
    a.train()
    assert a.step == 3 and (tmp_path / "a" / "samples" / "step_0000003.png").is_file()
    ckpt = load_checkpoint(tmp_path / "a" / "checkpoint.pt", family="toy", require_fastt2i=True)
    assert set(ckpt["nets"]) == {"G", "D"} and set(ckpt["opts"]) == {"G", "D"}  # the family's layout
    assert ckpt["fastt2i"]["family"] == "toy" and ckpt["fastt2i"]["ema"] is not None
    a2 = _toy(tmp_path / "a2", steps=4, save_every=2, ema=0.9)
    a2.train()  # uninterrupted to step 4 (checkpoint at 2 and 4)
    b = _toy(tmp_path / "b", steps=4, ema=0.9, resume=str(tmp_path / "a2" / "checkpoint.pt"))
    assert b.train() == []  # already at step 4
    c = _toy(tmp_path / "c", steps=4, save_every=2, ema=0.9)
    c.train(steps=2)
    d = _toy(tmp_path / "d", steps=4, ema=0.9, resume=str(tmp_path / "c" / "checkpoint.pt"))
    d.train()
    sa, sd = _state(a2), _state(d)
    assert all(torch.equal(sa[k], sd[k]) for k in sa)
    assert all(torch.equal(x, y) for x, y in zip(a2.ema.state_dict().values(), d.ema.state_dict().values()))


def test_evaluators_run_every_n_steps_and_their_history_survives_resume(tmp_path):
    calls = []

    def mean_pixel(trainer):
        calls.append(trainer.step)
        assert not torch.is_grad_enabled()
        return {"mean_pixel": trainer.sample(["a small red circle"], torch.Generator().manual_seed(0)).mean()}

    a = _dfgan(tmp_path, steps=3, save_every=2, eval_every=2, tensorboard=True, log_every=1,
               evaluators={"pixels": mean_pixel})
    a.train()
    assert calls == [2, 3]  # every 2 steps and at the end
    assert [r["step"] for r in a.eval_history] == [2, 3] and isinstance(a.eval_history[0]["mean_pixel"], float)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "eval" in r] == [2, 3] and sum("errD" in r for r in log) == 3
    assert os.listdir(tmp_path / "tb")
    b = _dfgan(tmp_path, steps=4, eval_every=2, resume="auto", evaluators=[mean_pixel])
    b.train()
    assert [r["step"] for r in b.eval_history] == [2, 3, 4]
    with pytest.raises(TypeError, match="dict of named floats"):
        _dfgan(tmp_path / "x", evaluators=[lambda t: 1.0]).evaluate()


def test_checkpoints_written_before_the_split_still_resume(tmp_path):
    """A checkpoint as the pre-core DF-GAN trainer wrote it (no evaluation history, older
    train_config) resumes into the same state as an uninterrupted run."""
    a = _dfgan(tmp_path / "a", steps=2, save_every=2)
    a.train()
    old = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    del old["fastt2i"]["evaluations"]
    for key in ("eval_every", "options"):
        del old["fastt2i"]["train_config"][key]
    assert set(old["fastt2i"]["scalers"]) == {"D", "G"}
    torch.save(old, tmp_path / "old.pt")
    a.train(steps=3)
    b = _dfgan(tmp_path / "b", steps=3, resume=str(tmp_path / "old.pt"))
    b.train()
    sa, sb = _state(a), _state(b)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_trainer_must_declare_its_family():
    class Nameless(Trainer):
        pass

    with pytest.raises(TypeError, match="sets family, layout and config_class"):
        Nameless()
    with pytest.raises(TypeError, match="expected a DFGANConfig"):
        DFGANTrainer(ToyConfig(), TrainConfig(data="synthetic:8", progress=False))


# ----------------------------------------------------------------------------- registry and CLI

def test_registry_lists_dfgan_and_rejects_unknown_names():
    fams = registered_families()
    assert "dfgan" in fams and fams["dfgan"].trainer is DFGANTrainer and fams["dfgan"].layout.family == "dfgan"
    with pytest.raises(ValueError, match="unknown family 'nope': expected one of .*dfgan"):
        get_family("nope")
    with pytest.raises(ValueError, match="says family 'dfgan'"):
        Family(name="other", summary="", trainer=DFGANTrainer, presets=(), model_config=None)


def test_cli_help_lists_the_families(capsys, toy_family):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["train", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "dfgan" in out and "DF-GAN" in out and "toy" in out
    with pytest.raises(SystemExit):
        cli_main(["train", "dfgan", "--help"])
    out = capsys.readouterr().out
    assert "--eval-every" in out and "--nf" in out and "--amp" in out
    with pytest.raises(SystemExit):
        cli_main(["train", "toy", "--help"])
    out = capsys.readouterr().out
    assert "--eval-every" in out and "--nf" not in out  # the common flags, without DF-GAN's own
    with pytest.raises(SystemExit) as exit_:
        cli_main(["train", "stylegan", "--steps", "1"])
    assert exit_.value.code == 2 and "invalid choice: 'stylegan'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli_main(["demo", "--help"])
    assert "dfgan" in capsys.readouterr().out


def test_a_checkpoint_of_another_family_is_named(tmp_path, capsys, toy_family):
    _toy(tmp_path / "toy", steps=1, save_every=1).train()
    toy_ckpt = str(tmp_path / "toy" / "checkpoint.pt")
    with pytest.raises(FamilyMismatchError, match=r"Toy-GAN checkpoint \(family 'toy'\), not a DF-GAN one"):
        _dfgan(tmp_path / "d").load(toy_ckpt)
    rc = cli_main(["train", "dfgan", "--data", "synthetic:16", "--imsize", "32", "--nf", "4", "--batch-size", "4",
                   "--steps", "1", "--out", str(tmp_path / "d"), "--workers", "0", "--no-progress", "--resume", toy_ckpt])
    err = capsys.readouterr().err
    assert rc == 2 and "'toy'" in err and "DF-GAN" in err
    rc = cli_main(["sample", "dfgan", "--checkpoint", toy_ckpt, "--caption", "a red circle",
                   "--out", str(tmp_path / "g.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "Toy-GAN" in err and "'dfgan'" in err
    # the other way round, and a plain state dict of a foreign network
    _dfgan(tmp_path / "df", steps=1, save_every=1).train()
    with pytest.raises(FamilyMismatchError, match=r"DF-GAN checkpoint \(family 'dfgan'\), not a Toy-GAN one"):
        _toy(tmp_path / "t2").load(str(tmp_path / "df" / "checkpoint.pt"))
    torch.save(ToyG(ToyConfig(), 10).state_dict(), tmp_path / "toyG.pth")
    rc = cli_main(["sample", "dfgan", "--checkpoint", str(tmp_path / "toyG.pth"), "--caption", "a red circle",
                   "--text-encoder", "x", "--vocab", "y", "--out", str(tmp_path / "g.png")])
    assert rc == 2 and "Toy-GAN's G (family 'toy')" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad inputs

def test_bad_inputs_are_clear_errors(tmp_path, capsys):
    base = ["train", "dfgan", "--data", "synthetic:16", "--imsize", "32", "--nf", "4", "--batch-size", "4",
            "--steps", "1", "--workers", "0", "--no-progress", "--out", str(tmp_path / "run")]
    assert cli_main(base + ["--resume", str(tmp_path / "missing.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert cli_main(base + ["--text-encoder", str(tmp_path / "missing.pth")]) == 2
    assert "file not found" in capsys.readouterr().err
    assert cli_main(base + ["--init-from", str(tmp_path / "missing.pth")]) == 2
    assert "file not found" in capsys.readouterr().err
    assert cli_main(base + ["--eval-every", "2"]) == 2
    assert "--eval-every needs at least one --eval" in capsys.readouterr().err
    assert cli_main(base + ["--eval-every", "2", "--eval", "nosuch"]) == 2
    assert "unknown evaluator" in capsys.readouterr().err
    # a text encoder trained on another vocabulary (size 12, not the synthetic one)
    from fastt2i.text import RNNEncoder

    torch.save(RNNEncoder(12).state_dict(), tmp_path / "text_encoder12.pth")
    with pytest.raises(StateDictMismatchError, match=r"encoder.weight: file \(12, 300\)"):
        _dfgan(tmp_path / "t", text_encoder=str(tmp_path / "text_encoder12.pth"))
    # a checkpoint whose vocabulary differs from the dataset's
    t = _dfgan(tmp_path / "v", steps=1, save_every=1)
    t.train()
    obj = torch.load(tmp_path / "v" / "checkpoint.pt", weights_only=True)
    obj["fastt2i"]["vocab"] = obj["fastt2i"]["vocab"][:-1]
    torch.save(obj, tmp_path / "v" / "other_vocab.pt")
    with pytest.raises(ValueError, match=r"vocabulary \(\d+ words\) differs from the dataset's"):
        _dfgan(tmp_path / "v2").load(str(tmp_path / "v" / "other_vocab.pt"))
    # a caption with no known word, in training's sample captions and in sampling
    with pytest.raises(EmptyCaptionError, match="no word of the vocabulary"):
        _dfgan(tmp_path / "e", sample_captions=["zebra giraffe"]).sample_grid()
    with pytest.raises(CheckpointError, match="no fastt2i resume state"):
        torch.save({"model": obj["model"]}, tmp_path / "official.pt")
        _dfgan(tmp_path / "o").load(str(tmp_path / "official.pt"))


def test_a_family_without_images_per_epoch_hook_and_clipping(tmp_path, toy_family):
    class NoImages(ToyTrainer):  # e.g. DAMSM pretraining: nothing to sample
        sample = Trainer.sample
        epochs: list

        def on_epoch(self, epoch):
            self.epochs = getattr(self, "epochs", []) + [epoch]

    t = NoImages(ToyConfig(), TrainConfig(data="synthetic:16", out_dir=str(tmp_path), steps=9, save_every=100,
                                          progress=False, seed=1))
    t.train()  # 4 batches per epoch: epochs 0, 1, 2
    assert t.epochs == [0, 1, 2] and not (tmp_path / "samples").exists() and (tmp_path / "checkpoint.pt").is_file()
    loss = 1e3 * sum(p.sum() for p in t.netG.parameters())
    t.optimizer_step("G", loss, clip_norm=0.5)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in t.netG.parameters()]))
    assert abs(norm.item() - 0.5) < 1e-4


def test_cli_evaluators_with_their_own_flags(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(registry, "_EVALUATORS", dict(registry._EVALUATORS))

    def make(args):
        return lambda trainer: {"scaled_step": args.toy_scale * trainer.step}

    registry.register_evaluator("toy_eval", make, "the step times --toy-scale",
                                add_arguments=lambda p: p.add_argument("--toy-scale", type=float, default=1.0))
    out = tmp_path / "run"
    rc = cli_main(["train", "dfgan", "--data", "synthetic:16", "--imsize", "32", "--nf", "4", "--batch-size", "4",
                   "--steps", "2", "--out", str(out), "--workers", "0", "--no-progress", "--eval-every", "1",
                   "--eval", "toy_eval", "--toy-scale", "3"])
    assert rc == 0 and "scaled_step 6" in capsys.readouterr().out
    evals = [json.loads(line)["eval"] for line in (out / "log.jsonl").read_text().splitlines() if "eval" in line]
    assert evals == [{"scaled_step": 3.0}, {"scaled_step": 6.0}]
    assert load_checkpoint(out / "checkpoint.pt")["fastt2i"]["evaluations"][-1] == {"step": 2, "scaled_step": 6.0}


def test_the_familys_image_sampler_reproduces_the_trainers_samples(tmp_path):
    t = _dfgan(tmp_path, steps=1, save_every=1, ema=0.5)
    t.train()
    captions = ["a small red circle above a large blue square", "a large green triangle"]
    sample_images = get_family("dfgan").image_sampler(str(tmp_path / "checkpoint.pt"))
    expected = t.sample(captions, torch.Generator().manual_seed(4))
    assert torch.equal(sample_images(captions, torch.Generator().manual_seed(4)), expected)
    assert expected.shape == (2, 3, 32, 32) and sample_images.imsize == 32


def test_fused_adam_rebuilds_only_a_fresh_adam_left_open_and_steps_like_the_loop():
    from fastt2i.train.core import fused_adam

    torch.manual_seed(0)
    params = [torch.randn(5, 3, requires_grad=True), torch.randn(7, requires_grad=True)]
    twins = [p.detach().clone().requires_grad_() for p in params]
    loop = torch.optim.Adam(params, lr=1e-2, betas=(0.0, 0.9), weight_decay=0.1)
    fused = fused_adam(torch.optim.Adam(twins, lr=1e-2, betas=(0.0, 0.9), weight_decay=0.1))
    assert fused.param_groups[0]["fused"] is True and fused.param_groups[0]["betas"] == (0.0, 0.9)
    assert fused.param_groups[0]["weight_decay"] == 0.1 and fused.param_groups[0]["params"] == twins
    for _ in range(3):
        grads = [torch.randn_like(p) for p in params]
        for p, q, g in zip(params, twins, grads):
            p.grad, q.grad = g.clone(), g.clone()
        loop.step()
        fused.step()
    for p, q in zip(params, twins):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7)
    # chosen implementations, other optimisers and AdamW's own signature
    chosen = torch.optim.Adam(params, foreach=False)
    assert fused_adam(chosen) is chosen
    sgd = torch.optim.SGD(params, lr=0.1)
    assert fused_adam(sgd) is sgd
    assert fused_adam(torch.optim.AdamW(params, lr=1e-3)).param_groups[0]["fused"] is True


def test_the_reference_backend_keeps_the_official_adam(tmp_path):
    from fastt2i import ops

    cfg = DFGANConfig.synthetic(**TINY)
    for backend, fused in (("reference", None), ("cpu" if "cpu" in ops.available_backends() else None, True)):
        if backend is None:
            continue
        with ops.use_backend(backend):
            trainer = DFGANTrainer(cfg, TrainConfig(data="synthetic:8", device="cpu", out_dir=str(tmp_path),
                                                    progress=False))
        assert all(opt.param_groups[0]["fused"] is fused for opt in trainer.optimizers.values())
