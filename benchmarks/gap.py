"""Where train_dist.py's time goes against plain Keras: one measured step at a time.

  .venv/bin/python -m benchmarks.gap             # about 12 minutes on 2 cores
  .venv/bin/python -m benchmarks.gap --inter_op  # train_dist.py, 1 against 2 inter-op threads
  .venv/bin/python -m benchmarks.gap --scaling   # 2 ranks x 1 core settings (SCALING below)

Starts from the harness's plain Keras model.fit (benchmarks.baseline, oneDNN on) and adds what
train_dist.py does differently, one thing per row, each row in its own process with everything of
the rows above it, all at 32 px, batch 64, fp32, 2 threads, synthetic data:

  plain      keras.applications.ResNet50 under model.fit on float32 numpy arrays
  model      resnet.model.build: uint8 input, caffe preprocessing as a frozen 1x1 conv, zero head
  loss       one-hot labels, label-smoothing-ready CategoricalCrossentropy, sample weights and
             weighted metrics (what the padded shards need)
  pipeline   resnet.data.pipeline.train_dataset: tf.data with stateless crop + flip, prefetch
  horovod    hvd.init() and hvd.DistributedOptimizer at 1 rank (train_dist.py leaves the wrapper
             out at 1 rank, where it has nothing to average; this row says what that saves)
  guards     train_dist.py's NaN check, signal flag, watchdog and Horovod's metric average
  logging    train_dist.py's throughput, progress lines and TensorBoard
  threads    train_dist.py's thread pools (resnet.runtime.threads.thread_counts: intra-op = the rank's
             CPUs, inter-op = 2 for 2+ CPUs) instead of TensorFlow's defaults

Prints a table of images/s (median, min-max of 3-step windows pooled over --rounds rounds) and
each row against `plain`; writes bench_out/gap.json. The rows are cumulative, so each row's change
is that row's cost. --scaling prints the same kind of table for the SCALING rows against 1 rank x
2 cores and writes bench_out/scaling.json.
"""

import argparse
import json
import os
import subprocess
import sys

from benchmarks.common import ROOT, train_dist_args
ROWS = ("plain", "model", "loss", "pipeline", "horovod", "guards", "logging", "threads")
BATCH, SIZE, STEPS = 64, 32, 15


def _model(upto: int):
    """The row's model, compiled: the harness's plain Keras one, or the job's (with Horovod's
    optimizer and the job's loss from those rows on)."""
    import tensorflow as tf

    from resnet import model as model_lib
    if upto >= ROWS.index("model"):
        model = model_lib.build(10, SIZE, "none", 0)
    else:
        inputs = tf.keras.Input((32, 32, 3))
        x = tf.keras.applications.resnet50.preprocess_input(inputs)
        base = tf.keras.applications.ResNet50(include_top=False, weights=None, pooling="avg",
                                              input_shape=(SIZE, SIZE, 3))
        outputs = tf.keras.layers.Dense(10, activation="softmax")(base(x, training=False))
        model = tf.keras.Model(inputs, outputs)
    optimizer = tf.keras.optimizers.SGD(0.001, momentum=0.9)
    if upto >= ROWS.index("horovod"):
        import horovod.tensorflow.keras as hvd
        hvd.init()
        optimizer = hvd.DistributedOptimizer(optimizer)
    if upto >= ROWS.index("loss"):
        model.compile(optimizer, tf.keras.losses.CategoricalCrossentropy(),
                      weighted_metrics=[tf.keras.metrics.CategoricalAccuracy(name="accuracy")])
    else:
        model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _callbacks(upto: int, timer) -> list:
    import tensorflow as tf

    from resnet.training import callbacks as cb
    from resnet.training.watchdog import Watchdog
    callbacks = [timer]
    if upto >= ROWS.index("guards"):
        import horovod.tensorflow.keras as hvd
        callbacks += [hvd.callbacks.MetricAverageCallback(), cb.StopOnNonFinite(lambda: 0),
                      cb.StopOnSignal(1).install(), Watchdog(1800, 0, lambda: "").start()]
    if upto >= ROWS.index("logging"):
        import tempfile
        callbacks += [cb.Throughput(BATCH),
                      cb.ProgressLog(50, STEPS, 1, BATCH, lambda: 0, lambda: 0),
                      tf.keras.callbacks.TensorBoard(tempfile.mkdtemp(), profile_batch=0)]
    return callbacks


def _measure(row: str) -> list:
    """Step seconds of one fit with everything up to and including `row` (in this process)."""
    import numpy as np
    import tensorflow as tf

    from benchmarks.common import StepTimer, use_job_threads
    from resnet.data import pipeline, sharding
    upto = ROWS.index(row)
    if upto >= ROWS.index("threads"):
        use_job_threads()
    n = BATCH * STEPS
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.int32)
    model = _model(upto)
    timer = StepTimer()
    callbacks = _callbacks(upto, timer)
    if upto >= ROWS.index("pipeline"):
        shard = sharding.train_shard(n, 0, 0, 0, 1, BATCH)
        ds = pipeline.train_dataset(pipeline.Split(images, labels), shard, BATCH, 0, 0)
        model.fit(ds, epochs=1, verbose=0, callbacks=callbacks)
    elif upto >= ROWS.index("loss"):
        onehot = np.eye(10, dtype=np.float32)[labels]
        model.fit(images, onehot, sample_weight=np.ones(n, np.float32), batch_size=BATCH,
                  epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
    else:
        x = images.astype(np.float32) if upto == 0 else images
        model.fit(x, labels, batch_size=BATCH, epochs=1, verbose=0, shuffle=False,
                  callbacks=callbacks)
    return timer.seconds


def compare_inter_op(rounds: int = 2) -> dict:
    """train_dist.py itself, 1 rank, as the harness runs it, with --inter_op_threads=1 and =2
    alternating (1, 2, 2, 1, ...): images/s of each, windows pooled over the rounds."""
    import tempfile

    from benchmarks import harness as bench
    rates = {1: [], 2: []}
    for round_ in range(rounds):
        for inter in ((1, 2) if round_ % 2 == 0 else (2, 1)):
            with tempfile.TemporaryDirectory() as d:
                cmd = [sys.executable, "train_dist.py"] + train_dist_args(
                    SIZE, "fp32", BATCH, STEPS, d, extra=[f"--inter_op_threads={inter}"])
                subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                                                       PYTHONPATH=ROOT),
                               check=True, capture_output=True)
                with open(os.path.join(d, "metrics.json")) as f:
                    seconds = json.load(f)["train_step_seconds"]
            rates[inter] += bench.windows(seconds, BATCH, skip=0)  # warm-up already left out
    return {f"inter_op_{k}": bench.summary(v) for k, v in rates.items()}


# --scaling: (name, ranks, extra flags, environment, command prefix, images/s multiplier).
# "2 x 1x1" is one rank pinned to one core with no Horovod at all, doubled: what 2 ranks x 1 core
# would do if the allreduce cost nothing, so the rows below it split compute from communication.
# The "+" rows are each the spinning 2 x 1 row with one change.
SPIN = {"OMPI_MCA_mpi_yield_when_idle": "0"}  # Open MPI's default; the launch plans now set 1
SCALING = (
    ("1 rank x 2 cores", 1, (), {}, (), 1),
    ("2 x (1 rank x 1 core), no allreduce", 1,
     ("--intra_op_threads=1", "--inter_op_threads=1"), {"OMP_NUM_THREADS": "1"},
     ("taskset", "-c", "0"), 2),
    ("2 ranks x 1 core, Open MPI spinning", 2, (), SPIN, (), 1),
    ("+ --gradient_compression=fp16", 2, ("--gradient_compression=fp16",), SPIN, (), 1),
    # Horovod's background thread meets the other rank's every cycle (default 1 ms); with one
    # core per rank it shares that core with the training threads.
    ("+ HOROVOD_CYCLE_TIME=10 (ms)", 2, (), dict(SPIN, HOROVOD_CYCLE_TIME="10"), (), 1),
    ("+ 2 inter-op threads per rank", 2, ("--inter_op_threads=2",), SPIN, (), 1),
    # The launch plans' setting (resnet.runtime.env.COMM_ENV): Open MPI yields the core while
    # it waits for the other rank.
    ("2 ranks x 1 core as launched (Open MPI yields)", 2, (), {}, (), 1),
)


def compare_scaling(rounds: int = 2) -> dict:
    """Each SCALING row through benchmarks.harness.train_dist (the harness's own runs), in forward then
    reverse order per round; images/s windows pooled over the rounds."""
    from benchmarks import harness as bench
    rates = {row[0]: [] for row in SCALING}
    commands = {}
    for round_ in range(rounds):
        for name, ranks, extra, env, prefix, times in (SCALING if round_ % 2 == 0
                                                       else SCALING[::-1]):
            r = bench.train_dist(SIZE, "fp32", BATCH, STEPS, ranks=ranks, extra=extra, env=env,
                                 prefix=prefix)
            if "timeout" in r:
                raise SystemExit(f"{name}: no result in {r['timeout']} s: {r['command']}")
            commands[name] = r["command"]
            rates[name] += [w * times for w in r["windows"]]
            print(f"round {round_ + 1} {name:40s} {r['median'] * times:6.1f} images/s",
                  file=sys.stderr, flush=True)
    return {name: dict(bench.summary(v), command=commands[name]) for name, v in rates.items()}


def main():
    p = argparse.ArgumentParser(prog="python -m benchmarks.gap")
    p.add_argument("--row", choices=ROWS, help="(internal) measure one row in this process")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--inter_op", action="store_true",
                   help="only compare train_dist.py with 1 and 2 inter-op threads (4 minutes)")
    p.add_argument("--scaling", action="store_true",
                   help="only compare 2 ranks x 1 core settings with 1 rank (about 20 minutes)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench_out"))
    a = p.parse_args()
    if a.scaling:
        result = compare_scaling(a.rounds)
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "scaling.json"), "w") as f:
            json.dump(result, f, indent=2)
        base = result[SCALING[0][0]]["median"]
        print("| layout | images/s, all ranks, median (min-max) | vs 1 rank x 2 cores |\n"
              "| --- | --- | --- |")
        for name, r in result.items():
            print(f"| {name} | {r['median']:.1f} ({r['min']:.1f}-{r['max']:.1f}) | "
                  f"{r['median'] / base:.2f} |")
        return
    if a.row:
        print(json.dumps(_measure(a.row)))
        return
    if a.inter_op:
        for key, r in compare_inter_op(a.rounds).items():
            print(f"{key}: {r['median']:.1f} images/s ({r['min']:.1f}-{r['max']:.1f}), "
                  f"{len(r['windows'])} windows")
        return
    from benchmarks import harness as bench
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT, TF_ENABLE_ONEDNN_OPTS="1",
               OMP_NUM_THREADS=str(len(os.sched_getaffinity(0))))
    # The machine drifts by tens of percent over minutes: every row runs once per round, in
    # forward then reverse order, and its windows from all rounds are pooled.
    rates = {row: [] for row in ROWS}
    for round_ in range(a.rounds):
        for row in (ROWS if round_ % 2 == 0 else ROWS[::-1]):
            out = subprocess.run([sys.executable, "-m", "benchmarks.gap", "--row", row],
                                 cwd=ROOT, env=env, capture_output=True, text=True, check=True)
            seconds = json.loads(out.stdout.strip().splitlines()[-1])
            rates[row] += bench.windows(seconds, BATCH)
            print(f"round {round_ + 1} {row:10s} "
                  f"{bench.summary(bench.windows(seconds, BATCH))['median']:6.1f} images/s",
                  file=sys.stderr, flush=True)
    result = {row: bench.summary(r) for row, r in rates.items()}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "gap.json"), "w") as f:
        json.dump(result, f, indent=2)
    base = result["plain"]["median"]
    print("| row | images/s, median (min-max) | vs plain |\n| --- | --- | --- |")
    for row in ROWS:
        r = result[row]
        print(f"| {row} | {r['median']:.1f} ({r['min']:.1f}-{r['max']:.1f}) | "
              f"{r['median'] / base:.2f} |")


if __name__ == "__main__":
    main()
