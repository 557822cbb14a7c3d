"""Shared helpers of the benchmarks: the header every script prints, interleaved rounds, medians, ratios,
and COCO-sized test images.

The machine these scripts were written on is shared and noisy (2 cores, other jobs training next to us), so no
figure here is a lone absolute time: every script measures two (or more) things in the same run, alternating
them round by round (A B, B A, A B, ...), and reports the median of each and the ratio of the medians.
Absolute times are printed too, labelled as this machine's.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import io
import os
import platform
import shlex
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
PYTHON = Path(sys.executable)
BIN = PYTHON.parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def free_port() -> int:
    """A free TCP port on loopback, for a run's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trained_model_parser(doc: str) -> argparse.ArgumentParser:
    """The options every script that studies a trained model takes: --checkpoint RUN --shards S [--split val]."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a run folder or an exported model")
    p.add_argument("--shards", required=True)
    p.add_argument("--split", default="val")
    return p


def header(title: str, measures: str) -> None:
    """Exact command, date, machine and what is measured: printed first by every benchmark."""
    import torch

    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        total = float("nan")
    cmd = " ".join(shlex.quote(a) for a in [os.path.relpath(PYTHON, Path.cwd()), *sys.argv])
    print(f"# {title}")
    print(f"command : {cmd}")
    print(f"date    : {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(
        f"machine : {socket.gethostname()}, {cores} cores ({cpu_model()}), {total:.0f} GiB RAM, "
        f"torch {torch.__version__}, python {platform.python_version()}, "
        f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (shared machine)"
    )
    print(f"measures: {measures}")
    print()


def median(values) -> float:
    return float(statistics.median(values))


def spread(values) -> str:
    """min..max of a list of numbers, for the reader to judge the noise."""
    return f"{min(values):.4g}..{max(values):.4g}"


def interleave(cases: dict[str, Callable[[], float]], rounds: int, label: str = "") -> dict[str, list[float]]:
    """Run every case once per round, alternating the order (ABC, CBA, ABC, ...); values per case."""
    names = list(cases)
    results: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            results[name].append(cases[name]())
        if label:
            last = ", ".join(f"{n} {results[n][-1]:.4g}" for n in names)
            print(f"  {label} round {r + 1}/{rounds}: {last}", flush=True)
    return results


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def table(rows: list[list[object]], headers: list[str]) -> str:
    """A GitHub-markdown table (also readable as plain text)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in cells[1:]]
    return "\n".join(out)


# ---------------------------------------------------------------- COCO-sized test images


def textured_pixels(width: int, height: int, fine: float, seed: int) -> np.ndarray:
    """uint8 (height, width, 3): smooth colour blobs at three scales plus fine grain, photo-like to a JPEG coder."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = np.zeros((height, width, 3), np.float32)
    for scale, amplitude in ((32, 60), (8, 40), (2, 20)):
        small = rng.normal(0, 1, (height // scale + 1, width // scale + 1, 3)).astype(np.float32)
        layer = Image.fromarray(np.uint8(np.clip(128 + amplitude * small, 0, 255))).resize(
            (width, height), Image.BICUBIC
        )
        out += np.asarray(layer, np.float32) - 128
    out += rng.normal(0, fine, (height, width, 3)).astype(np.float32)
    return np.uint8(np.clip(out + 128, 0, 255))


def coco_like_jpeg(width: int = 640, height: int = 480, target_kb: float = 160, seed: int = 0) -> bytes:
    """An RGB JPEG (quality 90, 4:2:0) of COCO's typical size: 640 x 480 and about `target_kb` KB.

    The fine grain is searched so the file lands within a few KB of the target (COCO train2014 averages about
    160 KB); the JPEG decoder's cost depends on the pixel count and the entropy-coded size, both matched.
    """
    from PIL import Image

    lo, hi = 0.0, 40.0
    best = b""
    for _ in range(12):
        fine = (lo + hi) / 2
        buffer = io.BytesIO()
        Image.fromarray(textured_pixels(width, height, fine, seed)).save(buffer, "JPEG", quality=90)
        best = buffer.getvalue()
        if abs(len(best) / 1024 - target_kb) < 3:
            break
        if len(best) / 1024 < target_kb:
            lo = fine
        else:
            hi = fine
    return best


def coco_like_polygon(width: int, height: int, seed: int, vertices: int = 40) -> list[float]:
    """A COCO-style object polygon (flat x, y list): a wobbly ellipse covering roughly 5-25 % of the image."""
    rng = np.random.default_rng(seed)
    cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
    rx, ry = rng.uniform(0.12, 0.28) * width, rng.uniform(0.12, 0.28) * height
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    wobble = 1 + 0.15 * rng.standard_normal(vertices)
    xs = np.clip(cx + rx * wobble * np.cos(angles), 0, width - 1)
    ys = np.clip(cy + ry * wobble * np.sin(angles), 0, height - 1)
    return [round(float(v), 2) for pair in zip(xs, ys, strict=True) for v in pair]


def mask_png(mask: np.ndarray) -> bytes:
    """The shard's mask encoding (1-bit PNG, level 6), as pipeline/shard.py writes it."""
    from jrnet.prep.write import png_mask

    return png_mask(mask)


# ---------------------------------------------------------------- a generated dataset and its shards

WORDS = [
    "man",
    "woman",
    "left",
    "right",
    "person",
    "red",
    "shirt",
    "blue",
    "car",
    "dog",
    "cat",
    "table",
    "chair",
    "near",
    "front",
    "behind",
    "big",
    "small",
]


def make_coco_like(root: Path, images: int, bases: int = 16) -> int:
    """A refer-layout dataset (as `synthetic`) of COCO-sized JPEGs; returns the number of refs."""
    import json
    import pickle

    from jrnet.prep.refer import dataset_spec

    spec = dataset_spec("synthetic")
    image_dir = spec.image_root(root)
    image_dir.mkdir(parents=True, exist_ok=True)
    spec.refs_path(root).parent.mkdir(parents=True, exist_ok=True)
    jpegs = [coco_like_jpeg(seed=s) for s in range(bases)]  # distinct files cycle through a few contents
    rng = np.random.default_rng(0)
    records, anns, refs = [], [], []
    ann_id = ref_id = sent_id = 0
    for image_id in range(1, images + 1):
        name = f"COCO_train2014_{image_id:012d}.jpg"
        (image_dir / name).write_bytes(jpegs[image_id % bases])
        records.append({"id": image_id, "file_name": name, "height": 480, "width": 640})
        split = "val" if image_id % 10 == 0 else "train"
        for _ in range(2 + image_id % 2):  # 2.5 refs per image on average
            ann_id += 1
            polygon = coco_like_polygon(640, 480, seed=ann_id)
            anns.append({"id": ann_id, "image_id": image_id, "category_id": 1, "segmentation": [polygon]})
            anns[-1] |= {"iscrowd": 0, "area": 0, "bbox": [0, 0, 1, 1]}
            sentences = []
            for _ in range(int(rng.integers(1, 4))):
                tokens = [str(word) for word in rng.choice(WORDS, size=int(rng.integers(2, 9)))]
                sentences.append({"tokens": tokens, "raw": " ".join(tokens), "sent": " ".join(tokens)})
                sentences[-1]["sent_id"] = sent_id
                sent_id += 1
            refs.append(
                {
                    "ref_id": ref_id,
                    "ann_id": ann_id,
                    "image_id": image_id,
                    "category_id": 1,
                    "split": split,
                    "sent_ids": [s["sent_id"] for s in sentences],
                    "sentences": sentences,
                    "file_name": name.replace(".jpg", f"_{ann_id}.jpg"),
                }
            )
            ref_id += 1
    categories = [{"id": 1, "name": "thing", "supercategory": "thing"}]
    spec.instances_path(root).write_text(json.dumps({"images": records, "annotations": anns, "categories": categories}))
    spec.refs_path(root).write_bytes(pickle.dumps(refs, protocol=4))  # written last: the layout is complete
    return len(refs)


def shard_dataset(data_root: Path, out: Path, workers: int = 2, extra: tuple[str, ...] = ()) -> float:
    """`pipeline/shard.py synthetic` (the real command) on a refer-layout root; seconds it took."""
    import subprocess

    cmd = [str(PYTHON), str(ROOT / "pipeline" / "shard.py"), "synthetic", "--data-root", str(data_root)]
    cmd += ["--out", str(out), "--workers", str(workers), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - t0


def synthetic_dataset(
    scratch: Path, num_images: int, workers: int = 2, extra: tuple[str, ...] = ()
) -> tuple[Path, Path, float]:
    """Generate the synthetic set under scratch/data and shard it to scratch/shards with default options plus
    `extra` options of pipeline/shard.py; (data root, shards folder, seconds it took)."""
    data, shards = scratch / "data", scratch / "shards"
    seconds = shard_dataset(data, shards, workers, ("--num-images", str(num_images), *extra))
    return data, shards, seconds


def coco_like_dataset(
    scratch: Path, num_images: int, workers: int = 2, extra: tuple[str, ...] = ()
) -> tuple[Path, Path, float]:
    """The COCO-sized stand-in under scratch/coco-data, sharded (100 refs per shard, plus `extra` options of
    pipeline/shard.py) to scratch/coco-shards."""
    data, shards = scratch / "coco-data", scratch / "coco-shards"
    t0 = time.perf_counter()
    make_coco_like(data, num_images)
    shard_dataset(data, shards, workers, ("--samples-per-shard", "100", *extra))
    return data, shards, time.perf_counter() - t0


# ---------------------------------------------------------------- peak memory from torch.profiler


def profiler_peak_bytes(fn) -> tuple[int, list[str]]:
    """Run fn() under torch.profiler(profile_memory=True); the peak of the running sum of its CPU allocations and
    frees in time order (bytes above the level before the call), and the attention/softmax op names seen."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events, stack, names = [], list(prof.profiler.kineto_results.experimental_event_tree()), set()
    while stack:
        node = stack.pop()
        if node.typed[0] == _EventType.Allocation:
            alloc = node.typed[1]
            if alloc.device.type == "cpu":
                events.append((node.start_time_ns, alloc.alloc_size))
        elif "attention" in node.name or "softmax" in node.name:
            names.add(node.name.removeprefix("aten::"))
        stack.extend(node.children)
    events.sort()
    current = peak = 0
    for _, size in events:
        current += size
        peak = max(peak, current)
    return peak, sorted(names)
