"""Batch inference and export in-process, on a model_dir made here: input order, output
formats, and every refusal with nothing written. The model is a small stand-in of the job's
(its input size, softmax over 3 classes), because loading a ResNet50 .keras file takes seconds
per call here; the job's own model goes through the same code in test_serving.py."""

import csv
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from resnet.errors import UsageError
from resnet.serving import batch, export

CLASSES = ["circle", "square", "star"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    x = tf.keras.Input((32, 32, 3), name="image")
    y = tf.keras.layers.GlobalAveragePooling2D()(tf.keras.layers.Rescaling(1 / 255)(x))
    tf.keras.Model(x, tf.keras.layers.Dense(len(CLASSES), activation="softmax")(y)).save(
        str(d / "model.keras"))
    (d / "class_names.json").write_text(json.dumps(CLASSES))
    (d / "metrics.json").write_text(json.dumps({"flags": {"image_size": 32, "precision": "fp32",
                                                          "weights": "none"}}))
    return d


def _copy(model_dir, dest, without=()):
    dest.mkdir()
    for name in os.listdir(model_dir):
        if name not in without:
            (dest / name).write_bytes((model_dir / name).read_bytes())
    return dest


def _images(folder, sizes):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_any_sizes_in_input_order_to_stdout_csv_and_a_jsonl_file(model_dir, tmp_path, capsys):
    a = _images(tmp_path / "a", [(32, 32), (100, 60), (7, 9)])
    b = _images(tmp_path / "b" / "deep", [(40, 40)])
    stats = batch.predict(str(model_dir), [str(a), str(b / "0.png")], top=2, batch_size=2)
    assert stats["images"] == 4 and stats["skipped"] == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["path", "class_1", "probability_1", "class_2", "probability_2"]
    assert [r[0] for r in rows[1:]] == [str(a / "0.png"), str(a / "1.png"), str(a / "2.png"),
                                        str(b / "0.png")]
    for r in rows[1:]:
        assert r[1] in CLASSES and r[3] in CLASSES and float(r[2]) >= float(r[4])
    out = tmp_path / "scores.jsonl"
    batch.predict(str(model_dir), [str(a)], str(out), top=3)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [sorted(r["classes"]) for r in lines] == [CLASSES] * 3
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-4 for r in lines)


@pytest.mark.parametrize("damage, message", [
    ("no model", "no model.keras; train first"),
    ("no names", "cannot read class_names.json"),
    ("bad json", "class_names.json: not JSON"),
    ("one name", "not a list of two or more distinct class names"),
    ("wrong count", "has 3 outputs but class_names.json names 4 classes"),
])
def test_a_model_dir_without_a_usable_model_or_names_is_refused(model_dir, tmp_path, damage,
                                                                message):
    d = _copy(model_dir, tmp_path / "m", without=("model.keras",) if damage == "no model" else
              ("class_names.json",) if damage == "no names" else ())
    names = {"bad json": "[\"circle\", ", "one name": json.dumps(["circle"]),
             "wrong count": json.dumps(CLASSES + ["wave"])}
    if damage in names:
        (d / "class_names.json").write_text(names[damage])
    images = _images(tmp_path / "in", [(32, 32)])
    out = tmp_path / "out.csv"
    with pytest.raises(UsageError, match=message):
        batch.predict(str(d), [str(images)], str(out))
    assert not out.exists()


def test_bad_outputs_inputs_and_images_are_refused_with_nothing_written(model_dir, tmp_path):
    images = _images(tmp_path / "in", [(32, 32), (32, 32)])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out, message in ((blocker / "out.csv", "cannot write in"),
                         (tmp_path / "out.txt", "name a .csv or .jsonl file"),
                         (tmp_path, "is a folder")):
        with pytest.raises(UsageError, match=message):
            batch.predict(str(model_dir), [str(images)], str(out))
    (tmp_path / "empty").mkdir()
    for paths, message in (([str(tmp_path / "empty")], "holds no images"),
                           ([str(tmp_path / "nowhere")], "no such file or folder"),
                           ([], "no images given")):
        with pytest.raises(UsageError, match=message):
            batch.predict(str(model_dir), paths, str(tmp_path / "out.csv"))
    (images / "1.png").write_bytes(b"text, not an image")
    with pytest.raises(UsageError, match=r"1.png: .*--skip_bad_images"):
        batch.predict(str(model_dir), [str(images)], str(tmp_path / "out.csv"))
    with pytest.raises(UsageError, match="--top=4: the model knows 3 classes"):
        batch.predict(str(model_dir), [str(images)], str(tmp_path / "out.csv"), top=4,
                      skip_bad=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "in"]
    stats = batch.predict(str(model_dir), [str(images)], str(tmp_path / "out.csv"),
                          skip_bad=True)
    assert (stats["images"], stats["skipped"]) == (1, 1)
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 2  # the header and 0.png


def test_export_refuses_a_file_as_its_folder_and_counts_versions_up(model_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        export.export(str(model_dir), str(blocker))
    with pytest.raises(UsageError, match="--precision=fp16"):
        export.export(str(model_dir), str(tmp_path / "e"), "fp16")
    assert export.next_version(str(tmp_path / "e")) == 1
    # Another precision needs the run's flags to rebuild the model: without them, a refusal,
    # nothing written and the process's policy as it was.
    bare = _copy(model_dir, tmp_path / "bare", without=("metrics.json",))
    with pytest.raises(UsageError, match="no metrics.json flags to rebuild the model at "
                                         "--precision=bf16"):
        export.export(str(bare), str(tmp_path / "b"), "bf16")
    assert not (tmp_path / "b").exists()
    assert tf.keras.mixed_precision.global_policy().name == "float32"
    (tmp_path / "e" / "3").mkdir(parents=True)
    (tmp_path / "e" / "notes").mkdir()
    assert export.next_version(str(tmp_path / "e")) == 4


@pytest.mark.parametrize("side", [32, 20, 47])
def test_serving_image_for_a_resizing_model_is_the_antialiased_resize_to_the_bit(side):
    # The shortcut for images already at the input size must give what the resize gives.
    from resnet.data.images import serving_image
    image = tf.constant(np.random.RandomState(side).randint(0, 256, (side, side, 3)), tf.uint8)
    got = serving_image(image, 32, True, 32)
    want = tf.image.resize(tf.cast(image, tf.float32), (32, 32), antialias=True)
    assert got.shape == (32, 32, 3) and got.dtype == tf.float32
    np.testing.assert_array_equal(got.numpy(), want.numpy())
