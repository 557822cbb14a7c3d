"""From a shard's raw members to tensors: decoding, one training sample, an evaluation item per sentence, and
the policy for broken samples. Runs inside the DataLoader workers."""

from __future__ import annotations

import io
import json
import logging
import random
import warnings

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_png
from torchvision.io import decode_image as decode_any
from torchvision.transforms.v2.functional import resize

from jrnet.config import Config
from jrnet.shard_format import IMAGE, LEVELS, MASK, META
from jrnet.shards import DataError

log = logging.getLogger(__name__)

# torchvision 0.29 marks its image decoders deprecated (in favour of torchcodec, not installed here) on every
# call; it is the fastest correct CPU JPEG decoder available to this project (BENCHMARKS.md).
warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision", DeprecationWarning)


class ErrorPolicy:
    """`warn`: log the shard and reason, skip, and count; `strict`: stop with an error naming the shard."""

    def __init__(self, mode: str):
        self.strict = mode == "strict"
        self.skipped = 0

    def __call__(self, exn: Exception, samples: int = 1) -> bool:
        """`samples`: how many the error cost (a shard that broke off loses the rest of it)."""
        where = next((a for a in reversed(exn.args) if isinstance(a, str) and ".tar" in a), "unknown shard")
        if self.strict:
            raise DataError(f"broken data in {where}: {exn}") from exn
        self.skipped += samples
        log.warning(
            "skipping broken data in %s (%s: %s); %d skipped in this worker",
            where,
            type(exn).__name__,
            exn.args[0] if exn.args else "",
            self.skipped,
        )
        return True


def decode_image(data: bytes, size: int) -> torch.Tensor:
    """uint8 (3, size, size). Only decoding (and resizing) runs here, on the CPU: the float conversion and
    normalisation are the model's input step, on its device (jrnet.backbone.Backbone.normalize).

    torchvision's libjpeg-turbo decoder, and its antialiased bilinear resize when the image is not stored at the
    model's size: the pixels of PIL's decode + bilinear resize within 2 levels, 1.6x faster (BENCHMARKS.md). An
    image stored at the model's size (`pipeline/shard.py --train-size`) is only decoded.
    """
    image = decode_any(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    if image.shape[-2:] != (size, size):
        image = resize(image, [size, size], antialias=True)
    return image


def decode_levels(data: bytes) -> torch.Tensor:
    """Feature-cache levels, fp16 (C2 + C3 + C4, H, W)."""
    return torch.from_numpy(np.load(io.BytesIO(data)))


def model_input(sample: dict, size: int) -> dict:
    """What the model reads from a sample: the cached trunk levels when the shard has them, else the image."""
    if LEVELS in sample:
        return {"levels": decode_levels(sample[LEVELS])}
    return {"image": decode_image(sample[IMAGE], size)}


def decode_mask(data: bytes, size: int | None = None) -> torch.Tensor:
    """bool (H, W), or (size, size) by nearest neighbour. A 1-bit PNG (shard format 2) is read as it is stored;
    an 8-bit 0/255 one (format 1) is thresholded."""
    # torchvision's libpng decode: about 1.5x PIL's for a 448 x 448 mask; both bit depths come out as 0/255.
    # Thresholded at 127 in place and viewed as bool: no second H x W tensor (a tenth of a ms at 448).
    mask = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.GRAY)[0]
    mask = mask.bitwise_right_shift_(7).view(torch.bool)
    if size is None or mask.shape == (size, size):
        return mask
    resized = Image.fromarray(mask.numpy()).resize((size, size), Image.NEAREST)
    return torch.from_numpy(np.array(resized))


def encode_tokens(tokens: list[int], max_words: int) -> torch.Tensor:
    out = np.zeros(max_words, dtype=np.int64)  # numpy: a tenth of the cost of building it in torch
    tokens = tokens[:max_words]
    out[: len(tokens)] = tokens
    return torch.from_numpy(out)


def train_sample(sample: dict, cfg: Config, epoch: int) -> dict:
    meta = json.loads(sample[META])
    if not meta["sentences"]:
        raise ValueError(f"ref {meta['ref_id']} has no sentences", sample.get("__url__", ""))
    sentence = random.Random(f"sentence-{cfg.train.seed}-{epoch}-{meta['ref_id']}").choice(meta["sentences"])
    try:
        if (
            cfg.data.gpu_decode and LEVELS not in sample
        ):  # the JPEG's bytes; the model's input step decodes the batch on the GPU
            inputs = {"jpeg": torch.frombuffer(bytearray(sample[IMAGE]), dtype=torch.uint8)}
        else:
            inputs = model_input(sample, cfg.model.image_size)
        mask = decode_mask(sample[MASK], cfg.model.image_size)
    except Exception as exn:  # a corrupt JPEG or PNG inside an intact tar
        raise ValueError(f"{sample['__key__']}: cannot decode image or mask: {exn}", sample["__url__"]) from exn
    tokens = encode_tokens(sentence["tokens"], cfg.data.max_words)
    return {**inputs, "mask": mask, "tokens": tokens, "ref_id": torch.tensor(meta["ref_id"])}


def eval_items(sample: dict, cfg: Config):
    meta = json.loads(sample[META])
    try:
        inputs = model_input(sample, cfg.model.image_size)
        mask = decode_mask(sample[MASK])
    except Exception as exn:
        raise ValueError(f"{sample['__key__']}: cannot decode image or mask: {exn}", sample["__url__"]) from exn
    for sentence in meta["sentences"]:
        yield {
            **inputs,
            "mask": mask,  # original resolution
            "tokens": encode_tokens(sentence["tokens"], cfg.data.max_words),
            "ref_id": meta["ref_id"],
            "sent_id": sentence["sent_id"],
            "raw": sentence["raw"],
            "words": len(sentence["tokens"]),  # as sharded: cut at max_words
            "kind": sentence.get("kind"),
            "jpg": sample[IMAGE],  # the overlays show the original image
        }


def collate_eval(items: list[dict]) -> dict:
    return {
        **{k: torch.stack([i[k] for i in items]) for k in ("image", "levels") if k in items[0]},
        "tokens": torch.stack([i["tokens"] for i in items]),
        "masks": [i["mask"] for i in items],
        "ref_id": [i["ref_id"] for i in items],
        "sent_id": [i["sent_id"] for i in items],
        "raw": [i["raw"] for i in items],
        "words": [i["words"] for i in items],
        "kind": [i["kind"] for i in items],
        "jpg": [i["jpg"] for i in items],
    }
