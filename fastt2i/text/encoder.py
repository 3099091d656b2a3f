"""The DAMSM text encoder (AttnGAN's ``RNN_ENCODER``), with the official parameter names.

``encoder`` (Embedding ntoken x 300, uniform(-0.1, 0.1)), ``drop`` (Dropout 0.5 on the
embeddings) and ``rnn`` (bi-LSTM, 128 hidden per direction).  forward(captions (B, T),
cap_lens (B,)) -> word features (B, 256, T_max) with zeros past each length, and the
sentence feature (B, 256) = last hidden state of both directions.

Differences from the official code, none of which changes a number: captions need not be
sorted by length (``enforce_sorted=False`` does the official sort / un-sort inside), and the
LSTM is built with ``dropout=0`` because PyTorch ignores (and warns about) dropout on a
one-layer LSTM.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class RNNEncoder(nn.Module):
    def __init__(self, ntoken: int, ninput: int = 300, drop_prob: float = 0.5, nhidden: int = 256,
                 nlayers: int = 1, bidirectional: bool = True, words_num: int = 18):
        super().__init__()
        if ntoken < 2:
            raise ValueError(f"ntoken: expected >= 2 (<end> plus words), got {ntoken}")
        self.n_steps = words_num
        self.ntoken, self.ninput, self.drop_prob, self.nlayers = ntoken, ninput, drop_prob, nlayers
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.nhidden = nhidden // self.num_directions  # per direction, as the official code
        self.encoder = nn.Embedding(ntoken, ninput)
        self.drop = nn.Dropout(drop_prob)
        self.rnn = nn.LSTM(ninput, self.nhidden, nlayers, batch_first=True,
                           dropout=drop_prob if nlayers > 1 else 0.0, bidirectional=bidirectional)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)

    @property
    def out_dim(self) -> int:
        return self.nhidden * self.num_directions

    def init_hidden(self, bsz: int):
        w = self.encoder.weight
        shape = (self.nlayers * self.num_directions, bsz, self.nhidden)
        return w.new_zeros(shape), w.new_zeros(shape)

    def forward(self, captions: torch.Tensor, cap_lens: torch.Tensor, hidden=None):
        if captions.dim() == 3 and captions.shape[-1] == 1:  # the official (B, T, 1) layout
            captions = captions.squeeze(-1)
        if captions.dim() != 2 or captions.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"captions: expected (B, T) integer indices, got {tuple(captions.shape)} {captions.dtype}")
        cap_lens = torch.as_tensor(cap_lens).reshape(-1)
        if cap_lens.numel() != captions.shape[0]:
            raise ValueError(f"cap_lens: expected {captions.shape[0]} lengths, got {cap_lens.numel()}")
        lens = cap_lens.detach().cpu().to(torch.int64)
        if (lens <= 0).any():
            bad = torch.nonzero(lens <= 0).flatten().tolist()
            raise ValueError(f"cap_lens: captions {bad} have length 0 (no known word); "
                             "the LSTM cannot encode an empty caption")
        if (lens > captions.shape[1]).any():
            raise ValueError(f"cap_lens: a length exceeds the caption width {captions.shape[1]}")
        if int(captions.max()) >= self.ntoken or int(captions.min()) < 0:
            raise ValueError(f"captions: indices must be in [0, {self.ntoken}), got [{int(captions.min())}, "
                             f"{int(captions.max())}] (vocabulary mismatch with this encoder?)")
        emb = self.drop(self.encoder(captions.long()))
        packed = pack_padded_sequence(emb, lens, batch_first=True, enforce_sorted=False)
        output, (h, _) = self.rnn(packed, hidden)
        output = pad_packed_sequence(output, batch_first=True)[0]
        words_emb = output.transpose(1, 2)  # (B, 2*nhidden, T_max)
        # h: (nlayers*dirs, B, nhidden) -> the last layer's directions, (B, dirs*nhidden)
        sent_emb = h[-self.num_directions:].transpose(0, 1).contiguous().view(-1, self.out_dim)
        return words_emb, sent_emb

    def extra_repr(self) -> str:
        return f"ntoken={self.ntoken}, ninput={self.ninput}, nhidden={self.nhidden}x{self.num_directions}"


# The official class name, for users porting code.
RNN_ENCODER = RNNEncoder


@torch.no_grad()
def encode_captions(text_encoder: RNNEncoder, captions: torch.Tensor, cap_lens: torch.Tensor):
    """Frozen encoding as the official ``prepare_data``: (sentence (B, 256), words (B, 256, T))."""
    enc = text_encoder.module if hasattr(text_encoder, "module") else text_encoder
    words, sent = enc(captions, cap_lens)
    return sent.detach(), words.detach()
