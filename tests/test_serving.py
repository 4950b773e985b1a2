"""After training, for real: a short run on real CIFAR-10 images (../shared), exported as a
SavedModel that a TensorFlow-only process loads and scores exactly as the job's own --eval_only
did; batch inference through predict.py from model.keras and from the SavedModel, on 1 and 2
ranks, giving the same rows in input order."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from conftest import ROOT, SHARED_DATA, SHARED_WEIGHTS, horovodrun, job_env, run_job

pytestmark = pytest.mark.slow  # a training, an --eval_only, exports and scoring processes


@pytest.fixture(scope="module")
def real_archive(tmp_path_factory):
    """The real CIFAR-10's own JPEG files, 16 train and 10 test images per class, in its layout."""
    if not (os.path.exists(SHARED_DATA) and os.path.exists(SHARED_WEIGHTS)):
        pytest.skip("../shared data or weights missing")
    out = str(tmp_path_factory.mktemp("real") / "cifar-10-small.tar.gz")
    keep = {"train": 16, "test": 10}
    with tarfile.open(SHARED_DATA) as src, tarfile.open(out, "w:gz") as dst:
        for m in src:
            parts = m.name.split("/")
            if m.isfile() and int(parts[-1].split(".")[0]) < keep[parts[0]]:
                dst.addfile(m, src.extractfile(m))
    return out


@pytest.fixture(scope="module")
def trained(real_archive, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("run") / "m")
    common = [f"--data_dir={real_archive}", f"--model_dir={model_dir}", "--image_size=32",
              "--batch_size=16", "--precision=fp32"]
    run_job(common + [f"--weights={SHARED_WEIGHTS}", "--epochs=1", "--warmup_epochs=0"])
    run_job(common + ["--weights=none", "--eval_only"])
    with open(os.path.join(model_dir, "metrics.json")) as f:
        evaluated = json.load(f)
    assert evaluated["mode"] == "eval_only" and evaluated["test_examples"] == 100
    # Scored as the export serves (every BatchNorm folded in): the comparisons below are exact.
    assert evaluated["evaluation_batchnorms_folded"] == 53
    return model_dir, evaluated


def test_the_folded_evaluation_scores_as_keras_layers(trained, real_archive, tmp_path):
    """The job's evaluation folds every BatchNorm in (--fold_batchnorm, the default); with
    --nofold_batchnorm it computes Keras's own layers: the same scores up to round-off."""
    model_dir, evaluated = trained
    copy = str(tmp_path / "m")  # its own folder: the fixture's metrics.json stays as it is
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("export"))
    run_job([f"--data_dir={real_archive}", f"--model_dir={copy}", "--image_size=32",
             "--batch_size=16", "--precision=fp32", "--weights=none", "--eval_only",
             "--nofold_batchnorm"])
    keras = json.load(open(os.path.join(copy, "metrics.json")))
    assert keras["evaluation_batchnorms_folded"] == 0
    assert keras["confusion_matrix"] == evaluated["confusion_matrix"]
    # 1.2e-7 apart on an AVX-512 EPYC (float32): 1e-5 leaves other CPUs' summation orders room.
    assert keras["test_loss"] == pytest.approx(evaluated["test_loss"], rel=1e-5)


def _export(model_dir, *args):
    return subprocess.run([sys.executable, "export.py", f"--model_dir={model_dir}", *args],
                          cwd=ROOT, env=job_env(), capture_output=True, text=True, timeout=600)


def _tensorflow_only_env():
    env = {k: v for k, v in job_env().items() if k not in ("TF_USE_LEGACY_KERAS", "PYTHONPATH")}
    return env


def test_export_loads_with_tensorflow_alone_and_scores_as_eval_only(trained, real_archive):
    model_dir, evaluated = trained
    proc = _export(model_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = os.path.join(model_dir, "export", "1")
    assert proc.stdout.strip().endswith(f"wrote {first}")
    shown = subprocess.run([os.path.join(os.path.dirname(sys.executable), "saved_model_cli"),
                            "show", "--dir", first, "--all"], capture_output=True, text=True,
                           timeout=300, env=_tensorflow_only_env())
    assert shown.returncode == 0, shown.stderr[-2000:]
    for signature in ("signature_def['serving_default']", "signature_def['pixels']"):
        assert signature in shown.stdout
    assert "inputs['image_bytes']" in shown.stdout and "dtype: DT_STRING" in shown.stdout
    assert "inputs['images']" in shown.stdout and "shape: (-1, 32, 32, 3)" in shown.stdout
    # A process with nothing but TensorFlow (Keras 3 as tf.keras, no resnet importable).
    check = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "serving_check.py"),
                            first, real_archive], cwd="/", env=_tensorflow_only_env(),
                           capture_output=True, text=True, timeout=600)
    assert check.returncode == 0, check.stderr[-3000:]
    got = json.loads(check.stdout.splitlines()[-1])
    assert got["keras"].startswith("keras") and not got["resnet_loaded"]
    assert not got["tf_keras_loaded"]
    assert got["signatures"] == ["pixels", "serving_default"]
    assert got["classes"] == json.load(open(os.path.join(model_dir, "class_names.json")))
    # Real CIFAR-10 test JPEGs through the shipped decoding: the job's own evaluation, exactly.
    assert got["confusion_matrix"] == evaluated["confusion_matrix"]
    assert got["pixels_against_bytes"] < 1e-6
    # As inference computes: every BatchNorm folded into its convolution (the caffe step's too
    # is a convolution: 53 + 1).
    assert got["batchnorm_ops"] == 0 and got["conv_ops"] == 54
    # Versions count up, the old one untouched: TF Serving picks the newest.
    proc = _export(model_dir)
    assert proc.returncode == 0 and sorted(os.listdir(os.path.join(model_dir, "export"))) == \
        ["1", "2"]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_batch_inference_from_keras_and_savedmodel_on_one_and_two_ranks(trained, real_archive,
                                                                       tmp_path):
    model_dir, evaluated = trained
    export = os.path.join(model_dir, "export")
    if not os.path.isdir(export):
        assert _export(model_dir).returncode == 0
    predict = [sys.executable, os.path.join(ROOT, "predict.py"), "--top=2"]
    outs = {}
    for name, source, ranks in (("keras", model_dir, 1), ("saved", export, 1),
                                ("keras2", model_dir, 2)):
        out = str(tmp_path / f"{name}.csv")
        cmd = predict + [f"--model_dir={source}", f"--out={out}", real_archive]
        proc = subprocess.run((horovodrun(2) if ranks == 2 else []) + cmd, cwd=ROOT,
                              env=job_env(), capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"scored 260 image(s)" in proc.stderr and f"{ranks} rank(s)" in proc.stderr
        outs[name] = _rows(out)
    header, *rows = outs["keras"]
    assert header == ["path", "class_1", "probability_1", "class_2", "probability_2"]
    assert len(rows) == 260 and rows[0][0] == f"{real_archive}:test/airplane/0000.jpg"
    names = [r[0] for r in rows]
    assert names == sorted(names)  # input order: the archive's members, sorted
    # The two models and the two rank counts agree on every row's classes; probabilities to
    # the printed 6 digits (the same weights; only the batches' float sums may differ).
    for other in ("saved", "keras2"):
        assert [r[:2] + r[3:4] for r in outs[other][1:]] == [r[:2] + r[3:4] for r in rows]
        for a, b in zip(outs[other][1:], rows):
            assert abs(float(a[2]) - float(b[2])) < 1e-5
    # The test images' top classes are the evaluation's confusion matrix.
    classes = json.load(open(os.path.join(model_dir, "class_names.json")))
    confusion = [[0] * len(classes) for _ in classes]
    for r in rows:
        if ":test/" in r[0]:
            confusion[classes.index(r[0].split("/")[-2])][classes.index(r[1])] += 1
    assert confusion == evaluated["confusion_matrix"]


def test_csv_to_stdout_and_bad_images_refused_or_skipped(trained, tmp_path):
    model_dir, _ = trained
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    with tarfile.open(SHARED_DATA) as src:
        for i, m in enumerate(x for x in src if x.name.endswith("/0000.jpg")):
            (folder / ("sub" if i % 2 else "") / f"{i}.jpg").write_bytes(src.extractfile(m).read())
            if i == 3:
                break
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    predict = [sys.executable, os.path.join(ROOT, "predict.py"), f"--model_dir={model_dir}"]
    out = tmp_path / "scores.jsonl"
    proc = subprocess.run(predict + [f"--out={out}", str(folder)], cwd=ROOT, env=job_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "broken.jpg: " in proc.stderr, proc.stderr[-2000:]
    assert "--skip_bad_images" in proc.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    proc = subprocess.run(predict + ["--skip_bad_images", str(folder)], cwd=ROOT, env=job_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipped 1 undecodable image(s)" in proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    assert [r[0] for r in rows[1:]] == [str(folder / n) for n in ("0.jpg", "2.jpg")] + \
        [str(folder / "sub" / n) for n in ("1.jpg", "3.jpg")]


def test_export_accuracy_benchmark_scores_fp32_as_eval_only_and_bf16_beside_it(trained,
                                                                              real_archive,
                                                                              tmp_path):
    model_dir, evaluated = trained
    out = str(tmp_path / "export_accuracy.json")
    exports = os.path.join(model_dir, "export")
    before = sorted(os.listdir(exports)) if os.path.isdir(exports) else []
    proc = subprocess.run([sys.executable, "-m", "benchmarks.export_accuracy",
                           f"--model_dir={model_dir}", f"--data_dir={real_archive}",
                           f"--out={out}"], cwd=ROOT, env=job_env(), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.load(open(out))
    assert got["images"] == evaluated["test_examples"] == 100
    assert got["fp32"]["accuracy"] == pytest.approx(evaluated["test_accuracy"], abs=1e-9)
    # bf16 rounds differently; what the benchmark reports must be what it measured.
    assert got["accuracy_points_bf16_minus_fp32"] == pytest.approx(
        100 * (got["bf16"]["accuracy"] - got["fp32"]["accuracy"]), abs=1e-4)
    assert 0 <= got["top_class_differs"] <= 100 and 0 < got["max_probability_difference"] < 1
    # Its exports went to a temporary base path, not among the run's versions.
    assert (sorted(os.listdir(exports)) if os.path.isdir(exports) else []) == before
