"""--elastic under a real elastic horovodrun: a killed rank, and the job finishes on the others.
(A host that joins, and one whose link is cut, are tested across emulated hosts: test_cluster.)"""

import json
import math
import os
import re
import signal

import pytest

from conftest import ROOT, SHARED_WEIGHTS, rank_pids, run_job, start_until

# Each test starts real jobs (TensorFlow, launchers): the slow tier (pytest -m 'not slow'
# leaves them out; .ci/run runs them).
pytestmark = pytest.mark.slow


@pytest.mark.skipif(not os.path.exists(SHARED_WEIGHTS), reason="needs the ImageNet weights")
def test_killing_rank_0_of_3_mid_epoch_the_others_finish_and_evaluate_right(tmp_path, image_tar):
    model_dir = str(tmp_path / "m")
    # Three names for this one machine: Horovod blacklists the host of a failed rank, and the
    # survivors need hosts left to run on.
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("localhost:1\n127.0.0.1:1\n{}:1\n".format(os.uname().nodename))
    common = [f"--data_dir={image_tar}", f"--model_dir={model_dir}", "--image_size=32",
              "--batch_size=4", f"--weights={SHARED_WEIGHTS}", "--learning_rate=0.001"]
    cmd = [os.path.join(ROOT, "launch", "horovodrun.sh"), "-np", "3", "--min-np", "2",
           "--max-np", "3", "--hosts-file", str(hosts), "--"] + common + [
        "--epochs=2", "--log_every_steps=1", "--commit_every_steps=2", "--intra_op_threads=1"]
    proc, seen = start_until(cmd, "epoch 1/2 step 3/")  # 80 images / 12 a step: 7 steps
    # Rank 0: the checkpoint writer and the root of every broadcast; a survivor takes over.
    victims = rank_pids(0, model_dir, "HOROVOD_RANK")
    assert len(victims) == 1, seen[-3000:]
    os.kill(victims[0], signal.SIGKILL)
    rest = proc.stdout.read()
    rc = proc.wait(timeout=600)
    log = seen + rest
    assert rc == 0, log[-6000:]
    assert "elastic: 3 rank(s), global batch 12; at epoch 1, 0 of 80 examples done" in log
    # The survivors went back to the last commit (every 2 steps of 12 examples), mid-epoch,
    # not to the start of the epoch.
    resumed = re.search(r"elastic: 2 rank\(s\), global batch 8; at epoch 1, (\d+) of 80", rest)
    assert resumed, rest[-4000:]
    done = int(resumed.group(1))
    assert 0 < done < 80 and done % 24 == 0, done
    # The rest of the epoch dealt to the 2 ranks left, 4 examples each per step.
    steps = math.ceil((80 - done) / 8)
    assert f"epoch 1/2 step {steps}/{steps} " in rest, rest[-4000:]

    trained = json.load(open(os.path.join(model_dir, "metrics.json")))
    assert trained["mode"] == "elastic" and trained["world_size"] == 2
    assert [h["world_size"] for h in trained["history"]] == [2, 2]
    assert trained["test_examples"] == 40
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints")))[-1] == "ckpt-0002-000000"

    # The final evaluation is right: one process evaluating the final checkpoint from scratch
    # gets the same counts (every test image once, the weights the survivors agreed on).
    run_job(common + ["--eval_only"])
    alone = json.load(open(os.path.join(model_dir, "metrics.json")))
    predicted = [sum(col) for col in zip(*alone["confusion_matrix"])]
    assert sum(1 for c in predicted if c) >= 2, alone["confusion_matrix"]  # not constant
    assert alone["confusion_matrix"] == trained["confusion_matrix"]
    assert alone["test_accuracy"] == trained["test_accuracy"]


def test_elastic_refuses_what_needs_a_collective_before_training(tmp_path, image_tar):
    proc = run_job([f"--data_dir={image_tar}", f"--model_dir={tmp_path}/m", "--elastic",
                    "--freeze_epochs=1", "--weights=none"], check=False)
    assert proc.returncode == 2
    assert "--elastic does not combine with --freeze_epochs" in proc.stderr
    assert not os.path.exists(tmp_path / "m")
