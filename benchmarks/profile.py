"""Where one training step's wall time goes: a few of train_dist.py's real steps, profiled.

  .venv/bin/python -m benchmarks.profile                       # the defaults' recipe
  .venv/bin/python -m benchmarks.profile --image_size=224 --train_from=conv1 --batch_size=16
  .venv/bin/python -m benchmarks.profile --conv_forms=conv     # any train_dist.py flag
  horovodrun -np 2 .venv/bin/python -m benchmarks.profile      # the allreduce too (rank 0's view)

Takes train_dist.py's flags (synthetic data and --weights=none unless given: the same compute),
runs the job itself for --warmup_steps steps, then profiles --profile_steps steps with
  - ONEDNN_VERBOSE=profile_exec: every oneDNN primitive run, with its kind, propagation,
    implementation and time (ONEDNN_VERBOSE_TIMESTAMP is not needed: the steps are marked);
  - TensorFlow's profiler: every TensorFlow op's time on the compute threads, so the ops outside
    oneDNN (casts, the optimizer, element-wise maths) and the wait for the input show beside it.
    Horovod's allreduce, an asynchronous op, counts from its start to its done: it overlaps
    the backward pass, so its row says how long the gradients were in flight, not what the
    step waited for (benchmarks.allreduce measures the network alone).
Then, on rank 0, benchmarks.ceiling in a fresh process: the step's FLOPs counted (the forward
pass and the trained layers' two gradients) and this machine's 3x3 convolution rate right after
the steps, so the table says how far the step is from the hardware (`% of ceiling`).
Prints per-step tables on rank 0 (markdown, for BENCHMARKS.md) and writes
bench_out/profile.json. Op times are summed over threads: with --inter_op_threads above 1 ops run
side by side and their sum can pass the wall time.
"""

import collections
import contextlib
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("ONEDNN_VERBOSE", "profile_exec")  # read when oneDNN first runs
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app, flags  # noqa: E402

import resnet  # noqa: E402,F401  (the job's environment before TensorFlow loads)
from resnet import flags as resnet_flags  # noqa: E402

resnet_flags.define()
flags.DEFINE_integer("warmup_steps", 3, "Steps run before the profile (tracing, first touches).")
flags.DEFINE_integer("profile_steps", 4, "Steps profiled.")
flags.DEFINE_bool("ceiling", True, "Count the step's FLOPs and measure this machine's "
                  "convolution rate after the steps (benchmarks.ceiling, in a process of its own).")
flags.DEFINE_string("out", os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "bench_out"), "Where profile.json goes.")
FLAGS = flags.FLAGS
START, STOP = "benchmarks.profile: start", "benchmarks.profile: stop"
TOP = 14  # rows per table; the rest are summed in one row


def onednn_rows(lines, steps: int):
    """{(kind, propagation, implementation): [calls, ms]} per step, from ONEDNN_VERBOSE lines
    between the START and STOP markers (oneDNN v3's 'onednn_verbose,v1,primitive,exec,...')."""
    rows, inside = collections.defaultdict(lambda: [0.0, 0.0]), False
    for line in lines:
        if line.startswith(START):
            inside = True
        elif line.startswith(STOP):
            break
        elif inside and line.startswith("onednn_verbose,"):
            fields = line.rstrip("\n").split(",")
            if len(fields) > 8 and fields[2] == "primitive" and fields[3] == "exec":
                row = rows[(fields[5], fields[7], fields[6])]
                row[0] += 1 / steps
                row[1] += float(fields[-1]) / steps
    return dict(rows)


def op_kind(op_type: str) -> str:
    """What a TensorFlow op type is, for the step's table."""
    if op_type.startswith(("_Mkl", "_FusedConv2D", "_FusedMatMul")):
        return "oneDNN op"
    if op_type.startswith("Horovod"):
        return "allreduce"
    if "Iterator" in op_type:
        return "input"
    return "TensorFlow op"


def _stat(plane, stat):
    value = stat.str_value or stat.int64_value or stat.uint64_value
    if stat.ref_value:
        value = plane.stat_metadata[stat.ref_value].name
    return plane.stat_metadata[stat.metadata_id].name, value


def tf_op_times(logdir: str, steps: int) -> dict:
    """{op type: ms per step} from the TF profiler's trace in `logdir`: each op's time on the
    compute threads, and each asynchronous op (Horovod's allreduce) from its start to its done,
    which TF records as a pair of ExecutorState::ProcessAsync markers joined by a flow id."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    times = collections.Counter()
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            starts, dones = {}, {}
            for line in plane.lines:
                compute = line.name.startswith(("tf_Compute", "tf_data_iterator_get_next"))
                for event in line.events:
                    meta = plane.event_metadata[event.metadata_id]
                    if meta.name.startswith("ExecutorState::ProcessAsync::"):
                        stats = dict(_stat(plane, st) for st in event.stats)
                        begin = line.timestamp_ns * 1000 + event.offset_ps
                        if meta.name.endswith("Start") and "_p" in stats:
                            starts[stats["_p"]] = (begin, stats.get("kernel_type", "async op"))
                        elif meta.name.endswith("Done") and "_c" in stats:
                            dones[stats["_c"]] = begin + event.duration_ps
                    elif compute and meta.display_name:  # executor bookkeeping has none
                        times[meta.display_name] += event.duration_ps / 1e9 / steps
            for flow, (begin, kind) in starts.items():
                if flow in dones:
                    times[kind] += (dones[flow] - begin) / 1e9 / steps
    return dict(times)


def _profiler_callback(logdir: str, warmup: int, steps: int):
    import horovod.tensorflow as hvd
    import tensorflow as tf

    class StepProfile(tf.keras.callbacks.Callback):
        """Marks the profiled steps for ONEDNN_VERBOSE, runs TF's profiler over them, then ends
        the run's training early (the epoch is cut short; the job evaluates and saves as ever)."""
        seconds = None

        def on_train_batch_begin(self, batch, logs=None):
            if batch == warmup:
                if hvd.rank() == 0:
                    tf.profiler.experimental.start(logdir)
                os.write(1, f"{START}\n".encode())  # oneDNN flushes each line: order kept
                self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):  # logs arrive synced: the step is done
            if batch == warmup + steps - 1:
                self.seconds = (time.perf_counter() - self.started) / steps
                os.write(1, f"{STOP}\n".encode())
                if hvd.rank() == 0:
                    tf.profiler.experimental.stop()
                self.model.stop_training = True
    return StepProfile()


@contextlib.contextmanager
def _stdout_to(path: str):
    """fd 1 (where oneDNN prints) into `path`; Python's print still reaches the terminal."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(path, "w") as f:
        os.dup2(f.fileno(), 1)
    sys.stdout = os.fdopen(os.dup(saved), "w")
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        sys.stdout = sys.__stdout__


def _config(work: str):
    import dataclasses
    config = resnet_flags.to_config(FLAGS)
    given = {name for name in ("dataset", "data_dir", "weights") if FLAGS[name].present}
    steps = FLAGS.warmup_steps + FLAGS.profile_steps
    changes = {"epochs": 1, "freeze_epochs": 0, "model_dir": os.path.join(work, "run"),
               "max_train_examples": config.max_train_examples or config.batch_size * steps * 8,
               "max_test_examples": config.batch_size, "log_every_steps": 10 ** 6}
    if not given & {"dataset", "data_dir"}:
        changes["dataset"] = "synthetic"
    if "weights" not in given:
        changes["weights"] = "none"
    return dataclasses.replace(config, **changes)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.profile_steps < 1 or FLAGS.warmup_steps < 1:
        raise app.UsageError("--profile_steps and --warmup_steps: at least 1 each")
    from resnet.training import job
    with tempfile.TemporaryDirectory() as work:
        config = _config(work)
        profile = _profiler_callback(os.path.join(work, "trace"), FLAGS.warmup_steps,
                                     FLAGS.profile_steps)
        verbose = os.path.join(work, "onednn.log")
        with _stdout_to(verbose):
            job.run(config, observers=[profile])
        import horovod.tensorflow as hvd
        if hvd.rank() != 0:
            return
        ranks = hvd.size()
        if profile.seconds is None:
            raise app.UsageError(f"the run ended before {FLAGS.warmup_steps} + "
                                 f"{FLAGS.profile_steps} steps: give --max_train_examples more")
        with open(verbose) as f:
            primitives = onednn_rows(f, FLAGS.profile_steps)
        ops = tf_op_times(os.path.join(work, "trace"), FLAGS.profile_steps)
    import tensorflow as tf
    effective = config.effective()
    result = {"config": effective.to_dict(), "ranks": ranks,
              "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
              "step_ms": profile.seconds * 1e3, "onednn": [[*k, *v] for k, v in primitives.items()],
              "tf_ops": ops, "machine": _machine(),
              "ceiling": _ceiling(effective) if FLAGS.ceiling else None}
    os.makedirs(FLAGS.out, exist_ok=True)
    with open(os.path.join(FLAGS.out, "profile.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(report(result))


def _ceiling(config) -> dict:
    """benchmarks.ceiling for this step's precision, size and frozen stages, in a process of its
    own (TensorFlow as the job sets it up, without the oneDNN log)."""
    precision = "fp32" if config.precision == "fp32" else "bf16"
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_VERBOSE", "DNNL_VERBOSE")}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    size = config.image_size_at(0)
    out = subprocess.run([sys.executable, "-m", "benchmarks.ceiling", f"--precisions={precision}",
                          f"--sizes={size}", f"--train_from={config.train_from}"],
                         env=env, capture_output=True, text=True, check=True).stdout
    c = json.loads(out.strip().splitlines()[-1])
    return {"precision": precision, "conv_gflops": c["ceiling"][precision]["conv_gflops"],
            "matmul_gflops": c["ceiling"][precision]["matmul_gflops"],
            "forward_flops": c["forward_flops"][str(size)],
            "train_flops": c["train_flops"][config.train_from][str(size)]}


def ceiling_line(r: dict) -> str:
    """The step's counted FLOPs against this machine's convolution rate, in one sentence."""
    c, step = r["ceiling"], r["step_ms"] / 1e3
    images = r["config"]["batch_size"] * r["ranks"]
    gflop = images * c["train_flops"] / 1e9
    rate = gflop / step / r["ranks"]  # the ceiling is one process with a rank's threads
    return (f"A step is about {gflop:.1f} GFLOP ({images} images x {c['train_flops'] / 1e9:.2f}: "
            f"the forward pass and the trained layers' two gradients, counted by "
            f"benchmarks.ceiling), so it computes {rate:.1f} GFLOP/s per rank: **"
            f"{100 * rate / c['conv_gflops']:.0f}% of this machine's {c['precision']} 3x3 "
            f"convolution rate** ({c['conv_gflops']:.1f} GFLOP/s, matmul "
            f"{c['matmul_gflops']:.1f}, measured right after the steps).")


def _machine() -> dict:
    from benchmarks.harness import machine
    return machine()


def report(r: dict) -> str:
    """The markdown tables of one profile (profile.json)."""
    step, c, m = r["step_ms"], r["config"], r["machine"]
    images = c["batch_size"] * r["ranks"]
    pct = lambda ms: f"{100 * ms / step:.1f}%"  # noqa: E731
    out = [f"{m['cpu']} ({' '.join(m['flags'])}), {m['date']}: {c['image_size']} px, batch "
           f"{c['batch_size']} x {r['ranks']} rank(s), --train_from={c['train_from']}, "
           f"{c['precision']}, --conv_forms={c['conv_forms']}; {FLAGS.profile_steps} steps "
           f"after {FLAGS.warmup_steps}", "",
           f"**One step: {step:.0f} ms wall ({images / step * 1e3:.1f} images/s).**", "",
           *([ceiling_line(r), ""] if r.get("ceiling") else []),
           "oneDNN primitives, per step:", "",
           "| primitive | propagation | implementation | calls | ms | of the step |",
           "| --- | --- | --- | --- | --- | --- |"]
    rows = sorted(r["onednn"], key=lambda row: -row[4])
    for kind, prop, impl, calls, ms in rows[:TOP]:
        out.append(f"| {kind} | {prop} | {impl} | {calls:.0f} | {ms:.1f} | {pct(ms)} |")
    rest = sum(row[4] for row in rows[TOP:])
    total = sum(row[4] for row in rows)
    if rest:
        out.append(f"| {len(rows) - TOP} more | | | | {rest:.1f} | {pct(rest)} |")
    out += [f"| **all oneDNN** | | | | **{total:.1f}** | **{pct(total)}** |", "",
            "By kind and propagation:", ""]
    kinds = collections.Counter()
    for kind, prop, _, _, ms in rows:
        kinds[f"{kind} {prop}"] += ms
    out += [f"- {k}: {ms:.1f} ms ({pct(ms)})" for k, ms in kinds.most_common()]
    groups = collections.Counter()
    for op_type, ms in r["tf_ops"].items():
        groups[op_kind(op_type)] += ms
    out += ["", "TensorFlow ops on the compute threads, per step (summed over threads):", "",
            "| ops | ms | of the step |", "| --- | --- | --- |"]
    out += [f"| {k} | {ms:.1f} | {pct(ms)} |" for k, ms in groups.most_common()]
    outside = [(t, ms) for t, ms in r["tf_ops"].items() if op_kind(t) != "oneDNN op"]
    out += ["", "The ops outside oneDNN, the largest:", "", "| op | ms | of the step |",
            "| --- | --- | --- |"]
    out += [f"| {t} | {ms:.1f} | {pct(ms)} |"
            for t, ms in sorted(outside, key=lambda x: -x[1])[:TOP]]
    # The allreduce runs beside the backward pass (its span is no thread's busy time).
    busy = sum(ms for t, ms in r["tf_ops"].items() if op_kind(t) != "allreduce")
    inter = c["inter_op_threads"] or r.get("inter_op_threads", 1)
    if busy > step:
        out += ["", f"The compute threads were busy {busy:.0f} ms per {step:.0f} ms step: with "
                f"{inter} inter-op threads, ops ran side by side, each slower for it (try "
                "--inter_op_threads=1)."]
    else:
        out += ["", f"Outside any TensorFlow op (Python, Keras, the executor, waiting): "
                f"{step - busy:.1f} ms ({pct(step - busy)}) of the wall time."]
    return "\n".join(out)


if __name__ == "__main__":
    app.run(main)
