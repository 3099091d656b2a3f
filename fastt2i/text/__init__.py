"""Text side: the official DAMSM tokenizer / vocabulary and the DAMSM RNN text encoder."""
from .encoder import RNN_ENCODER, RNNEncoder, encode_captions
from .vocab import (
    END_TOKEN,
    EmptyCaptionError,
    Vocabulary,
    load_captions_pickle,
    save_captions_pickle,
    tokenize,
    truncate_caption,
)

__all__ = [
    "END_TOKEN",
    "EmptyCaptionError",
    "RNN_ENCODER",
    "RNNEncoder",
    "Vocabulary",
    "encode_captions",
    "load_captions_pickle",
    "save_captions_pickle",
    "tokenize",
    "truncate_caption",
]
from .char_cnn_rnn import ALPHABET, DOC_LENGTH, CharCNNRNN, FixedRNN, encode_characters  # noqa: E402

__all__ += ["ALPHABET", "DOC_LENGTH", "CharCNNRNN", "FixedRNN", "encode_characters"]
from .char_cnn_rnn import CharCNNRNNConfig, ImageEncoder  # noqa: E402

__all__ += ["CharCNNRNNConfig", "ImageEncoder"]
