"""An eager transcription of the official MirrorGAN (qiaott/MirrorGAN: GLAttention.py, model.py's
NEXT_STAGE_G / CAPTION_CNN / CAPTION_RNN, miscc/losses.py's generator_loss and caption_loss,
the D/G update of trainer.py).

Written for fastt2i, not copied: the same computation in the same order, with the official
module and parameter names, so one state dict drives this and ``fastt2i.models.mirrorgan`` /
``fastt2i.models.stream``.  What MirrorGAN shares with AttnGAN comes from
``fastt2i.official.attngan`` (CA_NET, INIT_STAGE_G, GET_IMAGE_G, ResBlock, the D networks and
the D loss are the same code in both repositories).  Plain PyTorch only; not for training.

Quirks kept:
- the word attention's (B * queryL, T) mask layout (``mask.repeat(queryL, 1)``), as AttnGAN;
- ``nn.Softmax()`` without ``dim`` on the 4-d sentence scores: torch's implicit choice for a
  4-d input is dim 1, the channels;
- ``CAPTION_CNN`` resizes with ``nn.Upsample(size=(224, 224), mode='bilinear')``:
  ``align_corners=False`` on torch >= 0.4, and takes its backbone as built (the official
  ``resnet152(pretrained=True)`` without its fc);
- CAPTION_RNN packs with ``pack_padded_sequence`` as the official (the batch sorted by length,
  as ``prepare_data`` sorts it); the caption loss is ``nn.CrossEntropyLoss`` on the packed words;
- the released config's LAMBDA is 0: generator_loss computes no DAMSM loss at all.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from . import attngan as _attngan
from .attngan import KL_loss, discriminator_loss  # noqa: F401 - the same in both repositories


class GLAttentionGeneral(_attngan.GlobalAttentionGeneral):
    """GLAttention.py: the word part is GlobalAttentionGeneral's; the sentence part follows."""

    def __init__(self, idf, cdf):
        super().__init__(idf, cdf)
        self.conv_sentence_vis = nn.Conv2d(idf, idf, kernel_size=1, stride=1, padding=0, bias=False)
        self.linear = nn.Linear(100, idf)

    def forward(self, inp, sentence, context):
        weighted_context, word_attn = super().forward(inp, context)
        B, idf, ih, iw = inp.shape
        sentence = self.linear(sentence).view(B, idf, 1, 1).repeat(1, 1, ih, iw)
        sentence_vs = self.conv_sentence_vis(torch.mul(inp, sentence))
        sent_att = torch.softmax(sentence_vs, dim=1)  # nn.Softmax() on 4-d: dim 1
        weighted_sentence = torch.mul(sentence, sent_att)
        return weighted_context, weighted_sentence, word_attn, sent_att


class NEXT_STAGE_G(nn.Module):  # noqa: N801
    def __init__(self, ngf, nef, ncf, r_num=2):
        super().__init__()
        self.att = GLAttentionGeneral(ngf, nef)
        self.residual = nn.Sequential(*[_attngan.ResBlock(ngf * 2) for _ in range(r_num)])
        self.upsample = _attngan._up_block(ngf * 2, ngf)
        self.conv = nn.Conv2d(ngf * 3, ngf * 2, kernel_size=1, stride=1, padding=0, bias=False)

    def forward(self, h_code, c_code, word_embs, mask):
        self.att.applyMask(mask)
        c, weighted_sentence, att, _ = self.att(h_code, c_code, word_embs)
        h_c_sent_code = self.conv(torch.cat((torch.cat((h_code, c), 1), weighted_sentence), 1))
        return self.upsample(self.residual(h_c_sent_code)), att


class G_NET(_attngan.G_NET):  # noqa: N801
    def __init__(self, gf_dim=32, embedding_dim=256, condition_dim=100, z_dim=100, r_num=2, branch_num=3):
        super().__init__(gf_dim, embedding_dim, condition_dim, z_dim, r_num, branch_num)
        for stage in range(2, branch_num + 1):
            setattr(self, f"h_net{stage}", NEXT_STAGE_G(gf_dim, embedding_dim, condition_dim, r_num))


class CAPTION_CNN(nn.Module):  # noqa: N801
    def __init__(self, embed_size, resnet, size=224):
        super().__init__()
        self.resnet = nn.Sequential(*list(resnet.children())[:-1])
        for p in self.resnet.parameters():
            p.requires_grad = False
        self.linear = nn.Linear(resnet.fc.in_features, embed_size)
        self.bn = nn.BatchNorm1d(embed_size, momentum=0.01)
        self.size = size

    def forward(self, images):
        x = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False)
        features = self.resnet(x)
        features = features.view(features.size(0), -1)
        return self.bn(self.linear(features))


class CAPTION_RNN(nn.Module):  # noqa: N801
    def __init__(self, embed_size, hidden_size, vocab_size, num_layers, max_seq_length=20):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_size)
        self.lstm = nn.LSTM(embed_size, hidden_size, num_layers, batch_first=True)
        self.linear = nn.Linear(hidden_size, vocab_size)
        self.max_seg_length = max_seq_length

    def forward(self, features, captions, cap_lens):
        embeddings = torch.cat((features.unsqueeze(1), self.embed(captions)), 1)
        hiddens, _ = self.lstm(pack_padded_sequence(embeddings, cap_lens, batch_first=True))
        return self.linear(hiddens[0])

    def sample(self, features, states=None):
        sampled_ids, inputs = [], features.unsqueeze(1)
        for _ in range(self.max_seg_length):
            hiddens, states = self.lstm(inputs, states)
            _, predicted = self.linear(hiddens.squeeze(1)).max(1)
            sampled_ids.append(predicted)
            inputs = self.embed(predicted).unsqueeze(1)
        return torch.stack(sampled_ids, 1)


def caption_loss(cap_output, captions):
    return nn.CrossEntropyLoss()(cap_output, captions)


def generator_loss(netsD, caption_cnn, caption_rnn, captions, fake_imgs, real_labels, cap_lens, sent_emb,
                   lambda1=10.0):
    """miscc/losses.py generator_loss (its image_encoder, words_embs, match_labels and class_ids
    arguments are unused there and left out)."""
    bce = nn.BCELoss()
    total = 0
    for i, netD in enumerate(netsD):
        features = netD(fake_imgs[i])
        g_loss = bce(netD.COND_DNET(features, sent_emb), real_labels)
        if netD.UNCOND_DNET is not None:
            g_loss = g_loss + bce(netD.UNCOND_DNET(features), real_labels)
        total += g_loss
        if i == len(netsD) - 1:
            fakeimg_feature = caption_cnn(fake_imgs[i])
            lens = cap_lens.tolist()
            target_cap = pack_padded_sequence(captions, lens, batch_first=True)[0]
            cap_output = caption_rnn(fakeimg_feature, captions, lens)
            total += caption_loss(cap_output, target_cap) * lambda1
    return total


def train_iteration(netG, netsD, optimizersD, optimizerG, caption_cnn, caption_rnn, imgs, captions, cap_lens,
                    words_embs, sent_emb, mask, noise, avg_param_G=None, lambda1=10.0):
    """One iteration of ``Trainer.train``: G forward, one update per D, one G update, EMA 0.999."""
    B = sent_emb.size(0)
    real_labels = torch.ones(B, dtype=sent_emb.dtype, device=sent_emb.device)
    fake_labels = torch.zeros(B, dtype=sent_emb.dtype, device=sent_emb.device)
    fake_imgs, _, mu, logvar = netG(noise, sent_emb, words_embs, mask)
    errD_total = 0
    for i, netD in enumerate(netsD):
        netD.zero_grad()
        errD = discriminator_loss(netD, imgs[i], fake_imgs[i], sent_emb, real_labels, fake_labels)
        errD.backward()
        optimizersD[i].step()
        errD_total += errD
    netG.zero_grad()
    errG_total = generator_loss(netsD, caption_cnn, caption_rnn, captions, fake_imgs, real_labels, cap_lens,
                                sent_emb, lambda1)
    errG_total = errG_total + KL_loss(mu, logvar)
    errG_total.backward()
    optimizerG.step()
    if avg_param_G is not None:
        for p, avg_p in zip(netG.parameters(), avg_param_G):
            avg_p.mul_(0.999).add_(p.data, alpha=0.001)
    return errD_total, errG_total
