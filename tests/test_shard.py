"""pipeline/shard.py end to end on a tiny generated dataset, plus the refer and vocabulary helpers it uses.

Masks read back from the tars are compared with masks computed here directly with pycocotools (refer API
semantics), counts with the source refs, bytes across worker counts and across interrupted runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from jrnet.prep.refer import ReferDataset, ReferError, dataset_spec, mask_area, ref_mask
from jrnet.prep.shard import main
from jrnet.vocab import PAD, UNK, Vocab, load_glove_text, sentence_words, tokenize

REPO = Path(__file__).resolve().parent.parent
JSON_FIELDS = {
    "ref_id",
    "ann_id",
    "image_id",
    "category_id",
    "split",
    "file_name",
    "height",
    "width",
    "sentences",
}


# ---------------------------------------------------------------- helpers


def shard(data_root: Path, out: Path, *extra: str) -> int:
    return main(["synthetic", "--data-root", str(data_root), "--out", str(out), "--workers", "1", *extra])


def shard_size(out: Path) -> str:
    """--samples-per-shard of an existing output, so a rerun plans the same shards."""
    return str(manifest_of(out)["options"]["samples_per_shard"])


def manifest_of(out: Path) -> dict:
    return json.loads((out / "synthetic" / "manifest.json").read_text())


def read_tars(folder: Path) -> dict[str, dict]:
    """Samples of every tar in `folder` by key: {extension: bytes, "shard": tar name}."""
    samples: dict[str, dict] = defaultdict(dict)
    for path in sorted(folder.glob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                key, _, extension = member.name.partition(".")
                samples[key][extension] = tar.extractfile(member).read()
                samples[key]["shard"] = path.name
    return dict(samples)


def source(data_root: Path) -> tuple[list[dict], dict]:
    refs = pickle.loads((data_root / "synthetic" / "refs(unc).p").read_bytes())
    return refs, json.loads((data_root / "synthetic" / "instances.json").read_text())


def refer_api_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """The refer API's getMask, written out independently: decode, sum over parts, > 0."""
    segmentation = ann["segmentation"]
    if isinstance(segmentation, list) or isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    decoded = mask_utils.decode(rle)
    return (decoded.sum(axis=2) if decoded.ndim == 3 else decoded) > 0


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def copy_root(data_root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(data_root, tmp_path / "data"))


def error_line(captured: str) -> str:
    """The last stderr line, asserting the run ended with one `error:` line and no traceback."""
    assert "Traceback" not in captured
    last = captured.strip().splitlines()[-1]
    assert last.startswith("error: "), captured
    return last


# ---------------------------------------------------------------- what the shards hold


def test_masks_equal_refer_api_masks_pixel_for_pixel(synthetic_root, synthetic_shards):
    _, instances = source(synthetic_root)
    anns = {ann["id"]: ann for ann in instances["annotations"]}
    kinds = Counter()
    for key, sample in read_tars(synthetic_shards / "synthetic").items():
        assert set(sample) == {"jpg", "json", "mask.png", "shard"}
        meta = json.loads(sample["json"])
        assert set(meta) == JSON_FIELDS and key == f"{meta['ref_id']:09d}"
        with Image.open(io.BytesIO(sample["mask.png"])) as png:
            assert png.format == "PNG" and png.mode == "1"
            mask = np.asarray(png.convert("L"))
        assert mask.shape == (meta["height"], meta["width"])
        assert set(np.unique(mask)) <= {0, 255}
        ann = anns[meta["ann_id"]]
        expected = refer_api_mask(ann, meta["height"], meta["width"])
        np.testing.assert_array_equal(mask == 255, expected, err_msg=f"ref {meta['ref_id']}")
        kinds[segmentation_kind(ann, meta["height"], meta["width"])] += 1
    # every storage format a real dataset has went through the comparison above
    assert {"polygon", "overlapping polygons", "compressed RLE", "uncompressed RLE"} <= set(kinds)


def segmentation_kind(ann: dict, height: int, width: int) -> str:
    segmentation = ann["segmentation"]
    if isinstance(segmentation, dict):
        return "uncompressed RLE" if isinstance(segmentation["counts"], list) else "compressed RLE"
    if len(segmentation) == 1:
        return "polygon"
    summed = mask_utils.decode(mask_utils.frPyObjects(segmentation, height, width)).sum(axis=2)
    return "overlapping polygons" if summed.max() > 1 else "polygons"


def test_counts_match_the_source_and_the_manifest(synthetic_root, synthetic_shards):
    refs, _ = source(synthetic_root)
    folder = synthetic_shards / "synthetic"
    manifest = manifest_of(synthetic_shards)
    samples = read_tars(folder)
    assert list(manifest["splits"]) == ["train", "val", "testA", "testB"]
    assert manifest["dataset"] == "synthetic" and manifest["glove"] is None
    assert manifest["source"]["refs"] == str((synthetic_root / "synthetic" / "refs(unc).p").resolve())
    for split, entry in manifest["splits"].items():
        split_refs = [ref for ref in refs if ref["split"] == split]
        split_samples = [json.loads(s["json"]) for s in samples.values() if s["shard"].startswith(f"{split}-")]
        assert len(split_samples) == len(split_refs) == entry["samples"]
        sentences = sum(len(ref["sentences"]) for ref in split_refs)
        assert sum(len(meta["sentences"]) for meta in split_samples) == sentences == entry["sentences"]
        assert {meta["split"] for meta in split_samples} == {split}
        assert entry["missing_images"] == [] and entry["empty_masks"] == [] and entry["truncated_sentences"] == 0
        names = [shard["name"] for shard in entry["shards"]]
        assert names == [f"{split}-{i:06d}.tar" for i in range(len(names))]
        for shard_entry in entry["shards"]:
            path = folder / shard_entry["name"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == shard_entry["sha256"]
    assert sorted(samples) == sorted(f"{ref['ref_id']:09d}" for ref in refs)


def test_samples_are_sorted_by_ref_id_and_tokens_decode_to_the_words(synthetic_root, synthetic_shards):
    refs = {ref["ref_id"]: ref for ref in source(synthetic_root)[0]}
    folder = synthetic_shards / "synthetic"
    vocab = Vocab.from_file(folder / "vocab.json")
    for path in sorted(folder.glob("*.tar")):
        with tarfile.open(path) as tar:
            keys = [m.name.split(".")[0] for m in tar.getmembers() if m.name.endswith(".json")]
        assert keys == sorted(keys)
    for sample in read_tars(folder).values():
        meta = json.loads(sample["json"])
        ref = refs[meta["ref_id"]]
        assert [s["sent_id"] for s in meta["sentences"]] == ref["sent_ids"]
        for sentence, original in zip(meta["sentences"], ref["sentences"], strict=True):
            assert sentence["raw"] == original["raw"]
            expected = [vocab.ids.get(word, 1) for word in sentence_words(original)]
            assert sentence["tokens"] == expected and not sentence["truncated"]


def test_vocabulary_comes_from_the_train_split_only(synthetic_root, tmp_path):
    root = copy_root(synthetic_root, tmp_path)
    refs_file = root / "synthetic" / "refs(unc).p"
    refs = pickle.loads(refs_file.read_bytes())
    val_ref = next(ref for ref in refs if ref["split"] == "val")
    val_ref["sentences"][0]["tokens"].append("zeppelin")  # a word no train sentence has
    refs_file.write_bytes(pickle.dumps(refs))
    assert shard(root, tmp_path / "out") == 0
    folder = tmp_path / "out" / "synthetic"
    words = json.loads((folder / "vocab.json").read_text())["words"]
    counts = Counter(
        word.lower()
        for ref in refs
        if ref["split"] == "train"
        for sentence in ref["sentences"]
        for word in sentence["tokens"]
        if word.isalpha()
    )
    assert words == [PAD, UNK, *sorted(counts, key=lambda w: (-counts[w], w))]
    meta = json.loads(read_tars(folder)[f"{val_ref['ref_id']:09d}"]["json"])
    assert meta["sentences"][0]["tokens"][-1] == 1  # <unk>
    assert manifest_of(tmp_path / "out")["vocab_size"] == len(words)


def test_grayscale_and_cmyk_sources_come_back_as_rgb_jpeg(synthetic_root, synthetic_shards):
    modes = Counter()
    for sample in read_tars(synthetic_shards / "synthetic").values():
        file = synthetic_root / "images" / "synthetic" / json.loads(sample["json"])["file_name"]
        with Image.open(io.BytesIO(sample["jpg"])) as stored, Image.open(file) as original:
            assert stored.format == "JPEG" and stored.mode == "RGB" and stored.size == original.size
            modes[original.mode] += 1
            if original.mode == "RGB":
                assert sample["jpg"] == file.read_bytes()  # the original bytes, not a re-encoding
            else:
                difference = np.abs(np.asarray(stored, np.int16) - np.asarray(original.convert("RGB"), np.int16))
                assert difference.mean() < 3
    assert modes["L"] and modes["CMYK"] and modes["RGB"]


def test_naive_loader_agrees_with_the_shards(synthetic_root, synthetic_shards):
    samples = read_tars(synthetic_shards / "synthetic")
    dataset = ReferDataset(synthetic_root, "synthetic", "val")
    assert len(dataset) == manifest_of(synthetic_shards)["splits"]["val"]["samples"]
    for item in (dataset[i] for i in range(len(dataset))):
        sample = samples[f"{item['ref_id']:09d}"]
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(sample["mask.png"]))) > 0, item["mask"])
        assert item["image"].shape == (*item["mask"].shape, 3) and item["image"].dtype == np.uint8
        assert item["sentences"] == [s["raw"] for s in json.loads(sample["json"])["sentences"]]


# ---------------------------------------------------------------- determinism and resuming


def test_two_workers_write_the_same_bytes_as_one(synthetic_root, synthetic_shards, tmp_path):
    argv = ["synthetic", "--data-root", str(synthetic_root), "--out", str(tmp_path), "--workers", "2"]
    assert main([*argv, "--samples-per-shard", shard_size(synthetic_shards)]) == 0
    one, two = digests(synthetic_shards / "synthetic"), digests(tmp_path / "synthetic")
    assert one == two and len([name for name in one if name.endswith(".tar")]) >= 4


def test_rerun_rewrites_only_deleted_or_corrupted_shards(synthetic_root, synthetic_shards, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(synthetic_shards, out)
    folder = out / "synthetic"
    before = digests(folder)
    tars = sorted(folder.glob("*.tar"))
    deleted, corrupted, untouched = tars[0], tars[-1], tars[1:-1]
    deleted.unlink()
    with open(corrupted, "r+b") as file:
        file.seek(700)
        file.write(b"bit rot")
    (folder / "manifest.json").unlink()
    (folder / "val-000000.tar.tmp4242").write_bytes(b"left by a killed run")
    stamps = {path: (path.stat().st_mtime_ns, path.stat().st_ino) for path in untouched}

    assert shard(synthetic_root, out, "--samples-per-shard", shard_size(synthetic_shards)) == 0

    assert digests(folder) == before  # same checksums, manifest included; the temporary file is gone
    assert all((path.stat().st_mtime_ns, path.stat().st_ino) == stamp for path, stamp in stamps.items())
    assert corrupted.stat().st_mtime_ns > stamps[untouched[0]][0]


def test_sigkill_midway_then_rerun_finishes_with_identical_shards(tmp_path):
    """Also the one run through a real subprocess: it generates the synthetic set because it is absent."""
    root, out, clean = tmp_path / "data", tmp_path / "out", tmp_path / "clean"
    options = ["--workers", "1", "--samples-per-shard", "1", "--num-images", "30"]
    command = [sys.executable, str(REPO / "pipeline" / "shard.py"), "synthetic", "--data-root", str(root)]
    with open(tmp_path / "log", "wb") as log:
        process = subprocess.Popen([*command, "--out", str(out), *options], stdout=log, stderr=log, cwd=tmp_path)
    folder = out / "synthetic"
    deadline = time.monotonic() + 120
    while process.poll() is None and not list(folder.glob("*.state.json")) and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, (tmp_path / "log").read_text()
    assert not (folder / "manifest.json").exists()
    finished = {p.name.removesuffix(".state.json"): p.stat().st_mtime_ns for p in folder.glob("*.state.json")}
    assert finished

    assert main(["synthetic", "--data-root", str(root), "--out", str(out), *options]) == 0
    assert main(["synthetic", "--data-root", str(root), "--out", str(clean), *options]) == 0

    assert digests(folder) == digests(clean / "synthetic")
    assert all((folder / f"{name}.state.json").stat().st_mtime_ns == ns for name, ns in finished.items())


# ---------------------------------------------------------------- options and bad input


def test_truncated_sentences_are_cut_flagged_and_counted(synthetic_root, tmp_path):
    assert shard(synthetic_root, tmp_path, "--max-words", "3") == 0
    refs, _ = source(synthetic_root)
    manifest = manifest_of(tmp_path)
    samples = [json.loads(s["json"]) for s in read_tars(tmp_path / "synthetic").values()]
    for split, entry in manifest["splits"].items():
        long = sum(len(s["tokens"]) > 3 for ref in refs if ref["split"] == split for s in ref["sentences"])
        flagged = sum(s["truncated"] for meta in samples if meta["split"] == split for s in meta["sentences"])
        assert entry["truncated_sentences"] == flagged == long
    assert sum(e["truncated_sentences"] for e in manifest["splits"].values()) > 0
    assert max(len(s["tokens"]) for meta in samples for s in meta["sentences"]) == 3
    assert manifest["options"]["max_words"] == 3


def test_missing_images_stop_the_run_or_are_skipped_and_recorded(synthetic_root, tmp_path, capsys):
    root = copy_root(synthetic_root, tmp_path)
    refs, instances = source(root)
    names = {image["id"]: image["file_name"] for image in instances["images"]}
    gone = sorted({names[ref["image_id"]] for ref in refs if ref["split"] == "train"})[:2]
    for name in gone:
        (root / "images" / "synthetic" / name).unlink()

    assert shard(root, tmp_path / "out") == 2
    message = error_line(capsys.readouterr().err)
    assert all(name in message for name in gone) and "--skip-missing" in message
    assert not (tmp_path / "out").exists()  # nothing written

    assert shard(root, tmp_path / "out", "--skip-missing") == 0
    train = manifest_of(tmp_path / "out")["splits"]["train"]
    assert train["missing_images"] == gone
    skipped = {f"{ref['ref_id']:09d}" for ref in refs if names[ref["image_id"]] in gone}
    keys = set(read_tars(tmp_path / "out" / "synthetic"))
    assert skipped and not skipped & keys
    assert train["samples"] == sum(ref["split"] == "train" for ref in refs) - len(skipped)


def test_a_split_left_empty_is_a_clear_error_not_an_empty_tar(synthetic_root, tmp_path, capsys):
    root = copy_root(synthetic_root, tmp_path)
    refs, instances = source(root)
    names = {image["id"]: image["file_name"] for image in instances["images"]}
    for image_id in {ref["image_id"] for ref in refs if ref["split"] == "testB"}:
        (root / "images" / "synthetic" / names[image_id]).unlink(missing_ok=True)
    assert shard(root, tmp_path / "out", "--skip-missing") == 2
    message = error_line(capsys.readouterr().err)
    assert "split 'testB' has no samples" in message
    assert not list(tmp_path.glob("out/synthetic/testB-*.tar"))


def test_empty_masks_are_recorded_and_skipped_tiny_ones_kept(synthetic_root, tmp_path, capsys):
    root = copy_root(synthetic_root, tmp_path)
    refs, instances = source(root)
    train = [ref for ref in refs if ref["split"] == "train"]
    empty_ref, tiny_ref = train[0], train[1]
    anns = {ann["id"]: ann for ann in instances["annotations"]}
    anns[empty_ref["ann_id"]]["segmentation"] = [[10.0, 10.0, 10.0, 10.0, 10.0, 10.0]]
    anns[tiny_ref["ann_id"]]["segmentation"] = [[10.0, 10.0, 12.0, 10.0, 10.0, 12.0]]
    (root / "synthetic" / "instances.json").write_text(json.dumps(instances))

    assert shard(root, tmp_path / "out") == 0
    assert f"1 refs have an empty mask, skipped (ref ids {empty_ref['ref_id']})" in capsys.readouterr().err
    assert manifest_of(tmp_path / "out")["splits"]["train"]["empty_masks"] == [empty_ref["ref_id"]]
    samples = read_tars(tmp_path / "out" / "synthetic")
    assert f"{empty_ref['ref_id']:09d}" not in samples
    tiny = np.asarray(Image.open(io.BytesIO(samples[f"{tiny_ref['ref_id']:09d}"]["mask.png"])))
    image = next(image for image in instances["images"] if image["id"] == tiny_ref["image_id"])
    expected = refer_api_mask(anns[tiny_ref["ann_id"]], image["height"], image["width"])
    assert 0 < expected.sum() < 10
    np.testing.assert_array_equal(tiny > 0, expected)


def damage_image(path: Path, damage: str) -> None:
    if damage == "header only":
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "cut short":  # opens fine, breaks only when decoded
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        with Image.open(path) as image:
            image.resize((image.width + 1, image.height)).save(path)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("damage", ["header only", "cut short", "resized"])
def test_a_broken_image_met_by_a_worker_ends_the_run_cleanly(synthetic_root, tmp_path, capsys, damage):
    root = copy_root(synthetic_root, tmp_path)
    files = sorted((root / "images" / "synthetic").glob("*.jpg"))
    path = next(file for file in reversed(files) if Image.open(file).mode == "RGB")
    damage_image(path, damage)
    out = tmp_path / "out"
    argv = ["synthetic", "--data-root", str(root), "--out", str(out), "--workers", "2"]
    assert main([*argv, "--samples-per-shard", "4"]) == 2
    message = error_line(capsys.readouterr().err)
    assert str(path) in message
    assert ("instances.json says" if damage == "resized" else "cannot read the image") in message
    folder = out / "synthetic"
    assert not (folder / "manifest.json").exists()
    assert not [p.name for p in folder.iterdir() if ".tmp" in p.name]  # only whole shards, kept for a rerun


def test_missing_refs_or_instances_file_is_named(synthetic_root, tmp_path, capsys):
    assert main(["unc", "--data-root", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 2
    assert error_line(capsys.readouterr().err) == f"error: refs file not found: {tmp_path}/none/refcoco/refs(unc).p"

    refcoco = tmp_path / "data" / "refcoco"
    refcoco.mkdir(parents=True)
    shutil.copy(synthetic_root / "synthetic" / "refs(unc).p", refcoco)
    assert main(["unc", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "out")]) == 2
    assert error_line(capsys.readouterr().err) == f"error: instances file not found: {refcoco}/instances.json"

    assert main(["gref", "--split-by", "google", "--data-root", str(tmp_path / "none")]) == 2
    assert "refcocog/refs(google).p" in error_line(capsys.readouterr().err)
    assert dataset_spec("gref", "google").folder == "gref_google" and dataset_spec("gref").folder == "gref"


def test_unknown_dataset_is_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["refcoco"])
    assert exit_info.value.code == 2 and "invalid choice: 'refcoco'" in capsys.readouterr().err


def test_synthetic_options_that_contradict_the_existing_set_are_an_error(synthetic_root, tmp_path, capsys):
    assert shard(synthetic_root, tmp_path, "--num-images", "31") == 2
    assert "made with --num-images 30" in error_line(capsys.readouterr().err)


# ---------------------------------------------------------------- GloVe


def write_glove(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_glove_rows_of_the_vocabulary_are_baked_in(synthetic_root, tmp_path):
    glove = write_glove(
        tmp_path / "glove.txt",
        "the 1 2 3\n"
        "the end 9 9 9\n"  # a multi-word entry whose first word is in the vocabulary
        "at name@domain.com 7 7 7\n"
        "shape 4 5 6\n"
        "zeppelin 8 8 8\n"
        "the 5 5 5\n",  # a later duplicate: the first entry wins
    )
    assert shard(synthetic_root, tmp_path / "out", "--glove", str(glove)) == 0
    folder = tmp_path / "out" / "synthetic"
    vocab = Vocab.from_file(folder / "vocab.json")
    vectors = np.load(folder / "glove.npy")
    assert vectors.dtype == np.float32 and vectors.shape == (len(vocab), 3)
    np.testing.assert_array_equal(vectors[vocab.ids["the"]], [1, 2, 3])
    np.testing.assert_array_equal(vectors[vocab.ids["shape"]], [4, 5, 6])
    others = [i for word, i in vocab.ids.items() if word not in ("the", "shape")]
    assert not vectors[others].any()  # <pad>, <unk> and words GloVe lacks are zero rows
    entry = manifest_of(tmp_path / "out")["glove"]
    assert entry == {"file": str(glove.resolve()), "dim": 3, "found": 2, "missing": len(vocab) - 4}
    np.testing.assert_array_equal(load_glove_text(glove, vocab.words), vectors)


@pytest.mark.parametrize(
    ("text", "where"),
    [("hello world\n", ":1:"), ("the 1 2 3\nshape 4 5\n", ":2:"), ("", "empty GloVe file")],
)
def test_malformed_glove_is_an_error_naming_the_file(synthetic_root, synthetic_shards, tmp_path, capsys, text, where):
    glove = write_glove(tmp_path / "bad.txt", text)
    out = tmp_path / "out"
    shutil.copytree(synthetic_shards, out)
    assert shard(synthetic_root, out, "--glove", str(glove)) == 2
    message = error_line(capsys.readouterr().err)
    assert str(glove) in message and where in message
    assert (out / "synthetic" / "manifest.json").exists()  # checked before the old output was touched


# ---------------------------------------------------------------- vocabulary and masks, unit level


def test_tokenisation_keeps_lower_cased_alphabetic_words():
    assert tokenize("The 2nd man's hat, LEFT-most!") == ["the", "man", "s", "hat", "left", "most"]
    assert sentence_words({"tokens": ["The", "2", "red", "'s", "x1"], "sent": "ignored"}) == ["the", "red"]
    assert sentence_words({"tokens": [], "sent": "Blue one", "raw": "ignored"}) == ["blue", "one"]
    assert sentence_words({"raw": "Green!"}) == ["green"]


def test_vocab_orders_by_frequency_then_alphabet_and_encodes(tmp_path):
    vocab = Vocab.build([["b", "a"], ["a", "c"], ["c"]])
    assert vocab.words == [PAD, UNK, "a", "c", "b"] and len(vocab) == 5
    assert vocab.encode("A zebra, C b") == [2, 1, 3, 4]
    assert vocab.encode("a b c", max_words=2) == [2, 4]
    path = tmp_path / "vocab.json"
    path.write_text(vocab.to_json())
    assert Vocab.from_file(path).words == vocab.words
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=str(path)):
        Vocab.from_file(path)


def square(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def test_ref_mask_sums_overlapping_polygons_and_reads_every_rle_form():
    overlapping = {"segmentation": [square(2, 2, 12, 12), square(8, 8, 18, 18)]}
    mask = ref_mask(overlapping, 24, 20)
    parts = mask_utils.decode(mask_utils.frPyObjects(overlapping["segmentation"], 24, 20))
    assert (parts.sum(axis=2) == 2).any()  # keeping only == 1 would lose these pixels
    np.testing.assert_array_equal(mask, parts.max(axis=2) > 0)
    assert mask_area(overlapping, 24, 20) == mask.sum()

    compressed = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    as_text = {"size": compressed["size"], "counts": compressed["counts"].decode()}
    flat = mask.flatten(order="F").astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    uncompressed = {"size": [24, 20], "counts": np.diff(bounds).tolist()}  # starts with a zero run here
    for rle in (compressed, as_text, uncompressed):
        np.testing.assert_array_equal(ref_mask({"segmentation": rle}, 24, 20), mask)

    # pycocotools would read a leading 4-number "polygon" as a bbox; a 2-point polygon has no area
    with_degenerate = {"segmentation": [[1, 1, 5, 5], square(2, 2, 12, 12)]}
    expected = ref_mask({"segmentation": [square(2, 2, 12, 12)]}, 24, 20)
    np.testing.assert_array_equal(ref_mask(with_degenerate, 24, 20), expected)


def test_unknown_dataset_spec_is_a_refer_error():
    with pytest.raises(ReferError, match="unknown dataset 'coco'"):
        dataset_spec("coco")
