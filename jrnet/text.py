"""Sentence encoder (section 3.1): word embeddings initialised from GloVe, then a 1-layer LSTM to C channels."""

import warnings

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from jrnet.config import ModelConfig


class TextEncoder(nn.Module):
    """Token ids (B, T), 0 = padding -> word features (B, T, C) and the padding mask (True = real word)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, glove: np.ndarray | None, use_glove: bool):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, cfg.word_dim, padding_idx=0)
        if use_glove and glove is not None:
            if glove.shape != (vocab_size, cfg.word_dim):
                raise ValueError(f"GloVe matrix has shape {glove.shape}, expected ({vocab_size}, {cfg.word_dim})")
            self.embedding.weight.data.copy_(torch.from_numpy(glove))
            self.embedding.weight.requires_grad_(False)  # paper: frozen pre-trained vectors
        elif use_glove:
            warnings.warn("no GloVe vectors given: word embeddings start random and are trained", stacklevel=2)
        self.lstm = nn.LSTM(cfg.word_dim, cfg.channels, num_layers=1, batch_first=True)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        valid = tokens != 0
        # An all-padding sentence still runs one step (its words stay masked everywhere downstream).
        lengths = valid.sum(1).clamp(min=1).cpu()
        # The LSTM runs in its own weights' dtype, outside autocast: fp32 under bf16 autocast (oneDNN has no bf16
        # kernel for packed sequences), fp16 when DeepSpeed's fp16 mode has cast the whole model to half.
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            embedded = self.embedding(tokens).to(self.lstm.weight_ih_l0.dtype)
            packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(packed)
        words, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        return words, valid
