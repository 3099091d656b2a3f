"""STREAM (MirrorGAN's captioner): official names and computation, frozen backbone, teacher forcing,
greedy decoding, an overfit on synthetic captions, bad inputs.  A random ResNet-18 at 32 x 32
stands in for the ImageNet ResNet-152 at 224 (same modules, CPU-sized)."""
import pytest
import torch
import torchvision
from torch.nn.utils.rnn import pack_padded_sequence

from fastt2i.models.stream import CAPTION_CNN, CAPTION_RNN, STREAM, decode, pack_targets, with_end_token
from fastt2i.official import mirrorgan as official

from helpers import rel_error

VOCAB = 9


def _pair(seed=0):
    torch.manual_seed(seed)
    ours = STREAM(VOCAB, embed_size=8, hidden_size=12, backbone="resnet18", input_size=32).double().eval()
    cnn = official.CAPTION_CNN(8, torchvision.models.resnet18(weights=None), size=32).double().eval()
    rnn = official.CAPTION_RNN(8, 12, VOCAB, 1).double()
    cnn.load_state_dict(ours.caption_cnn.state_dict())
    rnn.load_state_dict(ours.caption_rnn.state_dict())
    return ours, cnn, rnn


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([6, 5, 3])
    captions = torch.randint(1, VOCAB, (3, 6), generator=g) * (torch.arange(6)[None] < lens[:, None])
    images = torch.rand(3, 3, 40, 40, generator=g, dtype=torch.float64) * 2 - 1
    return images, captions, lens


def test_official_defaults_and_names():
    rnn = CAPTION_RNN(vocab_size=20)
    assert (rnn.embed.embedding_dim, rnn.lstm.hidden_size, rnn.linear.out_features, rnn.max_seg_length) == \
        (256, 512, 20, 20)
    assert set(rnn.state_dict()) == set(official.CAPTION_RNN(256, 512, 20, 1).state_dict())
    cnn = CAPTION_CNN(16, backbone="resnet18", input_size=32)
    assert cnn.bn.momentum == 0.01 and cnn.linear.in_features == 512
    assert {"resnet.0.weight", "resnet.4.0.conv1.weight", "linear.weight", "bn.running_mean"} <= set(cnn.state_dict())


def test_forward_gradients_and_sampling_match_the_official_code():
    ours, cnn, rnn = _pair()
    images, captions, lens = _batch()
    images.requires_grad_(True)
    f = ours(images, captions, lens)
    o = rnn(cnn(images), captions, lens.tolist())
    assert rel_error(f, o) <= 1e-12
    assert torch.equal(pack_targets(captions, lens), pack_padded_sequence(captions, lens.tolist(), batch_first=True)[0])
    gi_f, *gp_f = torch.autograd.grad(f.pow(2).sum(), [images] + ours.trainable_parameters())
    gi_o, *gp_o = torch.autograd.grad(o.pow(2).sum(), [images, cnn.linear.weight, cnn.linear.bias, cnn.bn.weight,
                                                       cnn.bn.bias] + list(rnn.parameters()))
    assert rel_error(gi_f, gi_o) <= 1e-10
    assert max(rel_error(a, b) for a, b in zip(gp_f, gp_o)) <= 1e-10
    assert torch.equal(ours.describe(images.detach()), rnn.sample(cnn(images.detach())))


def test_backbone_is_frozen_and_stays_in_eval_mode():
    cnn = CAPTION_CNN(8, backbone="resnet18", input_size=32).train()
    assert not any(p.requires_grad for p in cnn.resnet.parameters())
    assert not cnn.resnet.training and cnn.bn.training
    before = cnn.resnet[1].running_mean.clone()
    cnn(torch.randn(2, 3, 32, 32))
    assert torch.equal(cnn.resnet[1].running_mean, before)


def test_end_token_and_decoding():
    captions, lens = torch.tensor([[3, 4, 5], [6, 7, 0]]), torch.tensor([3, 2])
    out, out_lens = with_end_token(captions, lens)
    assert out.tolist() == [[3, 4, 5, 0], [6, 7, 0, 0]] and out_lens.tolist() == [4, 3]
    assert decode(torch.tensor([[3, 4, 0, 5], [6, 6, 6, 6]])) == [[3, 4], [6, 6, 6, 6]]
    assert decode(torch.tensor([[2, 1, 0]]), {1: "a", 2: "red"}) == [["red", "a"]]


def test_loss_falls_and_greedy_decoding_returns_the_training_captions():
    """A short overfit on two synthetic images and their captions (with <end>)."""
    torch.manual_seed(0)
    stream = STREAM(VOCAB, embed_size=32, hidden_size=64, backbone="resnet18", input_size=32).train()
    images = torch.stack([torch.full((3, 32, 32), -0.8), torch.full((3, 32, 32), 0.8)])
    images[1, 0] = -0.5  # different colours
    captions, lens = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 0]]), torch.tensor([4, 3])
    captions_end, lens_end = with_end_token(captions, lens)
    targets = pack_targets(captions_end, lens_end)
    with torch.no_grad():  # the backbone is frozen: its features once, as pretraining may
        features = stream.caption_cnn.backbone_features(images)
    opt = torch.optim.Adam(stream.trainable_parameters(), lr=1e-2)
    losses = []
    for _ in range(120):
        logits = stream.caption_rnn(stream.caption_cnn.project(features), captions_end, lens_end)
        loss = torch.nn.functional.cross_entropy(logits, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])
    stream.eval()
    assert decode(stream.describe(images)) == [[1, 2, 3, 4], [5, 6, 7]]


def test_bad_inputs_give_clear_errors():
    rnn = CAPTION_RNN(8, 12, VOCAB)
    feats = torch.randn(2, 8)
    with pytest.raises(ValueError, match="features"):
        rnn(torch.randn(2, 7), torch.ones(2, 3, dtype=torch.long), torch.tensor([3, 2]))
    with pytest.raises(ValueError, match="word ids"):
        rnn(feats, torch.full((2, 3), VOCAB), torch.tensor([3, 2]))
    with pytest.raises(ValueError, match="cap_lens"):
        rnn(feats, torch.ones(2, 3, dtype=torch.long), torch.tensor([4, 2]))
    with pytest.raises(ValueError, match="cap_lens"):
        rnn(feats, torch.ones(2, 3, dtype=torch.long), torch.tensor([3]))
    with pytest.raises(ValueError, match="images"):
        CAPTION_CNN(8, backbone="resnet18", input_size=32)(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="backbone"):
        CAPTION_CNN(8, backbone="vgg16")
    with pytest.raises(FileNotFoundError, match="resnet18"):
        CAPTION_CNN(8, weights="/nonexistent.pth", backbone="resnet18")
