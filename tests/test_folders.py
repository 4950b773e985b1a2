"""Class-folder trees of any size: found, split, checked, held in memory or streamed, and every
refusal named. Written by the tests: PNGs and JPEGs of solid colours (traceable through any
crop) and CIFAR-10's own tiny image folders."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

import cifar_files
from resnet.config import Config
from resnet.data import pipeline, sharding, source
from resnet.data.splits import Split, StreamSplit
from resnet.errors import UsageError


def load(path, **flags):
    return source.open_data(str(path), Config(**flags))


def _same(data, splits):
    (train_x, train_y), (test_x, test_y) = splits

    def key(images, labels):  # folders are read class by class: compare as sets
        return sorted((int(l), im.tobytes()) for im, l in zip(images, labels))
    assert key(data.train.images, data.train.labels) == key(train_x, train_y)
    assert key(data.test.images, data.test.labels) == key(test_x, test_y)


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_cifar10_image_folder_and_archive(tmp_path, splits, ext):
    root = cifar_files.write_image_folder(str(tmp_path / "tree"), *splits, ext=ext)
    data = load(root)
    assert data.layout == "folders" and data.loading == "memory"
    assert data.class_names == cifar_files.CLASS_NAMES  # sorted folder names = CIFAR's order
    assert data.input_size(96) == 32  # 32 px in memory: the CIFAR path, the model resizes
    if ext == "png":
        _same(data, splits)  # lossless
    else:
        assert sorted(data.train.labels) == sorted(splits[0][1])
        assert np.abs(data.train.images.astype(int).mean() - splits[0][0].mean()) < 2
    archive = cifar_files.make_tar(root, str(tmp_path / "images.tar.gz"), "cifar-10-images")
    from_tar = load(archive)
    assert "archive" in from_tar.why
    np.testing.assert_array_equal(from_tar.train.images, data.train.images)


def test_any_classes_and_sizes_are_streamed(tmp_path):
    sizes = [(70, 90), (120, 66), (96, 96)]
    cifar_files.write_tree(str(tmp_path), ["cats", "dogs", "eels"], 4, test_per_class=2,
                           ext="jpg", sizes=sizes)
    data = load(tmp_path)
    assert data.class_names == ("cats", "dogs", "eels")
    assert isinstance(data.train, StreamSplit) and data.loading == "stream"
    assert "differ in size" in data.why
    assert data.input_size(64) == 64
    assert data.train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    with pytest.raises(UsageError, match="--data_loading=memory needs images all of one size"):
        load(tmp_path, data_loading="memory")


def test_class_names_beyond_ascii_stream(tmp_path):
    index = cifar_files.write_tree(str(tmp_path), ["café", "naïve"], 2, size=(70, 70),
                                   test_per_class=1)
    data = load(tmp_path, data_loading="stream")
    assert data.class_names == ("café", "naïve")
    shard = sharding.eval_shard(2, 0, 1, 2)
    (x, y, _), = list(pipeline.eval_dataset(data.test, shard, 2, 2, image_size=48))
    assert sorted(cifar_files.index_of(im[24, 24]) for im in x.numpy()) == sorted(
        k for p, k in index.items() if "/test/" in p)


def test_uniform_large_images_fit_in_memory_or_stream_on_request(tmp_path):
    cifar_files.write_tree(str(tmp_path), ["a", "b"], 3, size=(80, 80), test_per_class=1)
    data = load(tmp_path)
    assert isinstance(data.train, Split) and data.train.images.shape == (6, 80, 80, 3)
    assert "MiB per rank" in data.why
    assert data.input_size(64) == 64  # larger than 64 px: the pipeline crops to --image_size
    streamed = load(tmp_path, data_loading="stream")
    assert isinstance(streamed.train, StreamSplit)
    # The same test images reach the model either way (PNG: lossless; same centre crop).
    outs = []
    for d in (data, streamed):
        shard = sharding.eval_shard(len(d.test), 0, 1, 2)
        outs.append(np.concatenate([x.numpy() for x, _, _ in
                                    pipeline.eval_dataset(d.test, shard, 2, 2, image_size=64)]))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-3)
    assert outs[0].shape == (2, 64, 64, 3)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_streamed_epoch_reads_every_file_once_across_ranks(tmp_path, world):
    index = cifar_files.write_tree(str(tmp_path), ["a", "b", "c"], 7, size=(72, 72),
                                   test_per_class=1)
    data = load(tmp_path, data_loading="stream")
    by_path = {p: k for p, k in index.items()}
    expected = sorted(by_path[p] for p in data.train.paths)
    for epoch in (0, 1):
        seen = []
        for rank in range(world):
            shard = sharding.train_shard(len(data.train), 5, epoch, rank, world, 4)
            for x, y, w in pipeline.train_dataset(data.train, shard, 4, 5, epoch, 3,
                                                  image_size=40):
                for image, label, weight in zip(x.numpy(), y.numpy(), w.numpy()):
                    assert image.std(axis=(0, 1)).max() < 1.0  # one colour: a crop of one file
                    k = cifar_files.index_of(image[20, 20])
                    assert data.train.labels[np.flatnonzero(
                        [by_path[p] == k for p in data.train.paths])[0]] == label.argmax()
                    if weight:
                        seen.append(k)
        assert sorted(seen) == expected, f"epoch {epoch}: every file exactly once"


def test_held_out_split_is_fixed_per_class_and_disjoint(tmp_path):
    cifar_files.write_tree(str(tmp_path), ["x", "y"], 10, size=(40, 40))
    a = load(tmp_path, validation_fraction=0.2, data_loading="stream")
    b = load(tmp_path, validation_fraction=0.2, data_loading="stream", seed=7)
    assert len(a.test) == 4 and sorted(a.test.labels.tolist()) == [0, 0, 1, 1]
    assert a.test.paths.tolist() == b.test.paths.tolist()  # not moved by --seed
    assert not set(a.test.paths) & set(a.train.paths)
    assert len(a.train) + len(a.test) == 20
    assert "held out 20%" in a.why
    with pytest.raises(UsageError, match="no test/ or val/ folder.*--validation_fraction is 0"):
        load(tmp_path, validation_fraction=0)


def test_val_folder_is_the_test_split(tmp_path):
    cifar_files.write_tree(str(tmp_path), ["x", "y"], 3, size=(40, 40), test_per_class=2)
    os.rename(tmp_path / "test", tmp_path / "val")
    data = load(tmp_path)
    assert len(data.test) == 4 and data.why.endswith("test: val")


def test_train_and_test_with_different_classes(tmp_path, splits):
    root = cifar_files.write_image_folder(str(tmp_path / "t"), *splits)
    shutil.rmtree(os.path.join(root, "train", "cat"))
    os.makedirs(os.path.join(root, "train", "unicorn"))
    Image.new("RGB", (32, 32)).save(os.path.join(root, "train", "unicorn", "1.png"))
    with pytest.raises(UsageError, match="t/test/: missing class folder.*unicorn.*unexpected.*cat"):
        load(root)


def test_empty_class_folder_and_one_class(tmp_path):
    cifar_files.write_tree(str(tmp_path / "t"), ["a", "b"], 2, size=(40, 40), test_per_class=1)
    os.makedirs(tmp_path / "t" / "train" / "c")
    with pytest.raises(UsageError, match="train/c: a class folder with no images"):
        load(tmp_path / "t")
    cifar_files.write_tree(str(tmp_path / "one"), ["only"], 3, size=(40, 40), test_per_class=1)
    with pytest.raises(UsageError, match="1 class folder.*only.*at least 2"):
        load(tmp_path / "one")


def test_not_an_image_and_stray_files(tmp_path, splits):
    root = cifar_files.write_image_folder(str(tmp_path / "t"), *splits)
    open(os.path.join(root, "train", "ship", "notes.txt"), "w").write("hello")
    with pytest.raises(UsageError, match="notes.txt: not an image file"):
        load(root)
    os.unlink(os.path.join(root, "train", "ship", "notes.txt"))
    Image.new("RGB", (32, 32)).save(os.path.join(root, "train", "loose.png"))
    with pytest.raises(UsageError, match="loose.png: a file directly in train/"):
        load(root)


@pytest.mark.parametrize("damage", ["garbage", "truncated-jpeg", "truncated-png"])
def test_bad_image_named_or_skipped_with_a_count(tmp_path, damage, caplog):
    ext = "png" if damage == "truncated-png" else "jpg"
    cifar_files.write_tree(str(tmp_path), ["a", "b"], 4, size=(64, 64), test_per_class=1,
                           ext=ext)
    bad = tmp_path / "train" / "b" / f"0002.{ext}"
    raw = bad.read_bytes()
    bad.write_bytes(b"this is not an image" if damage == "garbage" else raw[:len(raw) * 2 // 3])
    problem = {"garbage": "not a JPEG or PNG", "truncated-jpeg": "truncated JPEG",
               "truncated-png": "truncated PNG"}[damage]
    with pytest.raises(UsageError, match=f"b/0002.{ext}: {problem}.*--skip_bad_images"):
        load(tmp_path)
    data = load(tmp_path, skip_bad_images=True)
    assert len(data.train) == 7
    assert "left out 1 bad image file(s)" in caplog.text


def test_grayscale_is_converted_and_an_odd_size_streams(tmp_path, splits):
    root = cifar_files.write_image_folder(str(tmp_path / "t"), *splits)
    Image.new("L", (32, 32), color=77).save(os.path.join(root, "train", "frog", "gray.png"))
    data = load(root)
    assert len(data.train) == len(splits[0][1]) + 1
    assert any((im == 77).all() for im in data.train.images)  # L -> RGB, all channels 77
    Image.new("RGB", (64, 48)).save(os.path.join(root, "train", "frog", "big.png"))
    assert load(root).loading == "stream"
    with pytest.raises(UsageError, match="need images all of one size|needs images all of one"):
        load(root, data_loading="memory")


def test_subsets_before_the_check(tmp_path):
    cifar_files.write_tree(str(tmp_path), ["a", "b"], 10, size=(40, 40), test_per_class=5)
    data = load(tmp_path, max_train_examples=6, max_test_examples=3)
    again = load(tmp_path, max_train_examples=6, max_test_examples=3)
    assert len(data.train) == 6 and len(data.test) == 3
    np.testing.assert_array_equal(data.train.images, again.train.images)


def test_nothing_found_names_the_layouts(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(UsageError, match="no data set found.*class-folder tree.*TFRecords"):
        load(tmp_path)


def test_streamed_jpegs_decode_to_exactly_the_pixels_held_in_memory(tmp_path):
    """TensorFlow decodes a streamed JPEG as Pillow decodes the in-memory copy (libjpeg's
    accurate IDCT on both sides): the same test batches either way, to the last level."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 2), ("test", 2)):
        for name in ("p", "q"):
            os.makedirs(tmp_path / split / name)
            for i in range(n):
                pixels = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / name / f"{i}.jpg", quality=75)
    held, streamed = load(tmp_path, data_loading="memory"), load(tmp_path, data_loading="stream")
    shard = sharding.eval_shard(4, 0, 1, 4)
    a, b = [next(iter(pipeline.eval_dataset(d.test, shard, 4, 2, image_size=80)))[0].numpy()
            for d in (held, streamed)]
    np.testing.assert_array_equal(a, b)


def test_an_archive_that_lists_no_folders_keeps_its_test_split(tmp_path):
    """Tar writers that add files only (tar of a file list, tarfile.addfile) record no folder
    entries: test/ is known from its files alone, and must still be the test split, not a
    10% held out of train/."""
    import io
    import tarfile
    cifar_files.write_tree(str(tmp_path / "tree"), ["a", "b"], 5, test_per_class=3)
    archive = tmp_path / "files-only.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted((tmp_path / "tree").rglob("*.png")):
            data = path.read_bytes()
            info = tarfile.TarInfo(str(path.relative_to(tmp_path / "tree")))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert not any(m.isdir() for m in tarfile.open(archive))
    data = source.open_data(str(archive), Config(data_dir=str(archive), weights="none"))
    assert (len(data.train), len(data.test)) == (10, 6) and data.why.endswith("test: test")


def test_every_pipeline_runs_without_the_autotune_model(tmp_path, splits):
    """Its thread held each epoch's end for up to a minute (pipeline.without_autotune_model):
    the job's training and test pipelines, held in memory or streamed, are built without it."""
    cifar_files.write_tree(str(tmp_path), ["a", "b"], 3, size=(72, 72), test_per_class=1)
    (x, y), _ = splits
    for split in (Split(x[:8], y[:8]), load(tmp_path, data_loading="stream").train):
        shard = sharding.train_shard(len(split), 0, 0, 0, 1, 2)
        for ds in (pipeline.train_dataset(split, shard, 2, 0, 0, 10, image_size=32),
                   pipeline.eval_dataset(split, sharding.eval_shard(len(split), 0, 1, 2), 2,
                                         10, image_size=32)):
            assert ds.options().autotune.enabled is False
