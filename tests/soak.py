"""Soak: many short epochs on 2 ranks, SIGKILLed every few epochs and resumed; the end must equal
an uninterrupted run. Slow (22 minutes for 50 epochs here), so not in CI:

  .venv/bin/python tests/soak.py --epochs 50 --kill_every 7

Prints a JSON summary (epochs run, kills survived, checkpoints verified, final metrics of both).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

import cifar_files  # noqa: E402
from resnet.training import checkpoints  # noqa: E402


def _cmd(data, model_dir, epochs):
    return [os.path.join(ROOT, "launch", "horovodrun.sh"), "-np", "2", "--", f"--data_dir={data}",
            f"--model_dir={model_dir}", "--weights=none", "--image_size=32", "--batch_size=8",
            "--learning_rate=0.001", f"--epochs={epochs}", "--keep_checkpoints=2",
            "--log_every_steps=1000"]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--kill_every", type=int, default=7)
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="soak-")
    data = cifar_files.write_image_folder(os.path.join(work, "data"),
                                          cifar_files.make_split(8, 1), cifar_files.make_split(4, 2))
    started = time.time()
    subprocess.run(_cmd(data, os.path.join(work, "plain"), a.epochs), env=_env(), check=True,
                   capture_output=True, timeout=4 * 3600)
    plain_minutes = (time.time() - started) / 60

    model_dir = os.path.join(work, "killed")
    kills, verified, started = 0, 0, time.time()
    while True:
        proc = subprocess.Popen(_cmd(data, model_dir, a.epochs), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        target = None
        while proc.poll() is None:
            newest = checkpoints.latest(model_dir)
            epoch = checkpoints.read_state(newest).epoch if newest else 0
            if target is None:
                target = epoch + a.kill_every
            if epoch >= target and epoch < a.epochs:
                os.killpg(proc.pid, signal.SIGKILL)  # the whole job, as a node failure would
                proc.wait(timeout=120)
                kills += 1
                for name in checkpoints.all_names(model_dir):
                    problem = checkpoints.verify(os.path.join(checkpoints.directory(model_dir),
                                                              name))
                    assert problem is None, f"{name}: {problem}"
                    verified += 1
                break
            time.sleep(0.5)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL or kills, f"job failed: {proc.returncode}"
    killed_minutes = (time.time() - started) / 60
    got = json.load(open(os.path.join(model_dir, "metrics.json")))
    want = json.load(open(os.path.join(work, "plain", "metrics.json")))
    summary = {"epochs": a.epochs, "kills_survived": kills, "checkpoints_verified": verified,
               "history_epochs": [h["epoch"] for h in got["history"]] == list(
                   range(1, a.epochs + 1)),
               "test_accuracy": [got["test_accuracy"], want["test_accuracy"]],
               "test_loss": [got["test_loss"], want["test_loss"]],
               "equal": got["test_accuracy"] == want["test_accuracy"]
               and abs(got["test_loss"] - want["test_loss"]) <= 1e-4 * abs(want["test_loss"]),
               "minutes": {"uninterrupted": round(plain_minutes, 1),
                           "with_kills": round(killed_minutes, 1)}}
    print(json.dumps(summary, indent=2))
    return 0 if summary["equal"] and summary["history_epochs"] else 1


if __name__ == "__main__":
    sys.exit(main())
