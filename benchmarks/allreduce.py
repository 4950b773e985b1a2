"""ResNet50's gradient allreduce across emulated hosts, measured alone and held against the
network model (resnet/launch/cost_model.py).

  .venv/bin/python -m benchmarks.allreduce                       # about 15 minutes, as root
  .venv/bin/python -m benchmarks.allreduce --rates=1gbit --hosts=2 --rounds=1   # a quick look

An emulated cluster (tools/netcluster.py: 3 network namespaces with sshd, one bridge) with every
host's link limited by tc tbf to each --rates value. For each setting, horovodrun (Open MPI, as
the job runs) starts one rank per host, and each rank allreduces tensors of exactly the shapes of
ResNet50's trainable variables (every stage training: 23.6 M parameters, 90 MiB in float32) as
DistributedOptimizer does, one Horovod allreduce per gradient inside one tf.function, so Tensor
Fusion packs them as in training. Nothing else is computed: this machine's 2 cores, which all the
hosts share, only move bytes. Each setting is timed for --iters allreduces after 2 warm-up ones,
and the settings run in a new order each round. Raw figures go to bench_out/allreduce.json.

Horovod's levers (fusion threshold, cycle time, hierarchical allreduce, autotune), and the
allreduce algorithm under them (Open MPI's ring forced, Gloo's), are measured the same way at the
slowest rate, on every --hosts count, with --levers.

--end_to_end instead times train_dist.py itself across the hosts (synthetic data, every stage
training so the whole 90 MiB crosses the link each step) and holds its images/s against the
model's: the step's compute (measured on one host, same settings) plus the modelled allreduce,
with this emulation's wire efficiency and round cost (TBF_WIRE, EMULATED_ROUND_S).
"""

import argparse
import json
import os
import statistics
import sys
import time

from benchmarks.common import ROOT

WARMUP = 2
LEVERS = {  # name: the environment it sets (Horovod 0.28.1 reads each at start-up)
    "defaults": {},
    "fusion 0 (no Tensor Fusion)": {"HOROVOD_FUSION_THRESHOLD": "0"},
    "fusion 16 MiB": {"HOROVOD_FUSION_THRESHOLD": str(16 * 2**20)},
    "fusion 256 MiB": {"HOROVOD_FUSION_THRESHOLD": str(256 * 2**20)},
    "cycle time 10 ms": {"HOROVOD_CYCLE_TIME": "10"},
    "hierarchical allreduce": {"HOROVOD_HIERARCHICAL_ALLREDUCE": "1"},
    "autotune": {"HOROVOD_AUTOTUNE": "1"},
    # Not Horovod's levers but the algorithm under them: Horovod's CPU allreduce is Open MPI's
    # MPI_Allreduce, whose tuned component picks an algorithm by message size and rank count;
    # 4 forces the ring (what the model assumes). Gloo's allreduce is a ring of its own; it
    # needs horovodrun --gloo (HOROVOD_CPU_OPERATIONS=gloo under mpirun has no Gloo context:
    # Horovod 0.28.1 crashes with SIGSEGV in GlooAlgorithms::Allreduce, seen here).
    "Open MPI ring": {"OMPI_MCA_coll_tuned_use_dynamic_rules": "1",
                      "OMPI_MCA_coll_tuned_allreduce_algorithm": "4"},
    "Gloo allreduce": {"HOROVODRUN_ARGS": "--gloo"},
    # An artefact of the emulation, not a lever for a real cluster: every host here shares the
    # same 2 cores, and Open MPI busy-polls while it waits unless told the node is
    # oversubscribed. With 3 ranks on 2 cores a spinning rank can keep the one that should
    # send off the CPU; yielding shows how much of a 3-host figure is that.
    "MPI yields when idle": {"OMPI_MCA_mpi_yield_when_idle": "1"},
}


def worker(compression: str, iters: int) -> None:
    """One rank: allreduce ResNet50's gradient shapes `iters` times; rank 0 prints JSON."""
    import resnet  # noqa: F401  (tf.keras is Keras 2)
    import horovod.tensorflow as hvd
    import tensorflow as tf

    from resnet import model as model_lib
    hvd.init()
    model = model_lib.build(10, 32, "none", 0)
    model_lib.set_trainable(model, "full", "conv1")
    grads = [tf.random.stateless_normal(v.shape, (0, i)) for i, v in
             enumerate(model.trainable_variables)]
    comp = hvd.Compression.fp16 if compression == "fp16" else hvd.Compression.none

    @tf.function
    def allreduce():
        # Horovod: as DistributedOptimizer does, one allreduce per gradient, averaged.
        return [hvd.allreduce(g, op=hvd.Average, compression=comp, name=f"grad{i}")
                for i, g in enumerate(grads)]

    seconds = []
    for i in range(WARMUP + iters):
        t = time.perf_counter()
        out = allreduce()
        float(out[-1][0])  # the values are here
        if i >= WARMUP:
            seconds.append(time.perf_counter() - t)
    if hvd.rank() == 0:
        nbytes = sum(int(g.shape.num_elements()) for g in grads) * 4
        print("RESULT " + json.dumps({"seconds": seconds, "bytes_fp32": nbytes,
                                      "tensors": len(grads), "ranks": hvd.size()}), flush=True)


def _measure(cluster, hosts: int, compression: str, iters: int, env: dict) -> dict:
    names = cluster.names[:hosts]
    hr = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    env = dict(env)
    cmd = [hr, *env.pop("HOROVODRUN_ARGS", "").split(), "-np", str(hosts),
           "-H", ",".join(f"{h}:1" for h in names),
           "--network-interfaces", "eth0", sys.executable, "-m", "benchmarks.allreduce",
           "--worker", f"--compression={compression}", f"--iters={iters}"]
    run_env = cluster.env(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT, OMP_NUM_THREADS="1",
                          **env)
    out = cluster.run(names[0], cmd, cwd=ROOT, env=run_env, timeout=1200, check=False)
    found = [ln for ln in (out.stdout + out.stderr).splitlines() if "RESULT " in ln]
    if out.returncode or not found:
        raise RuntimeError(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stderr[-3000:]}")
    return json.JSONDecoder().raw_decode(found[0].split("RESULT ", 1)[1])[0]


# tc tbf counts a packet from its Ethernet header on, with no FCS, preamble or gap: of its
# 1514 bytes, 1448 are a TCP stream's data (the model's wire efficiency, for this emulation).
TBF_WIRE = 1448 / 1514
# The fixed cost of one ring round here, fitted from --levers' Open MPI ring at 2 and 3 hosts
# (26.8 and 26.4 ms: BENCHMARKS.md). A fabric's is about 5 us (cost_model.LATENCY_S).
EMULATED_ROUND_S = 0.026


def _predicted(hosts: int, nbytes: int, rate: str, round_s: float = None) -> float:
    from resnet.launch import cost_model
    from tools.netcluster import rate_bits
    return cost_model.allreduce_seconds(hosts, nbytes, rate_bits(rate) / 1e9,
                                        cost_model.LATENCY_S if round_s is None else round_s,
                                        wire=TBF_WIRE)


def run(rates, host_counts, compressions, iters, rounds, levers, defaults=True) -> list:
    from tools import netcluster
    why = netcluster.unavailable()
    if why:
        raise SystemExit(f"error: {why}")
    settings = [(r, h, c, "defaults") for r in rates for h in host_counts for c in compressions
                if defaults]
    settings += [(rates[0], h, "none", name) for h in host_counts for name in levers
                 if name != "defaults"]
    rows = {s: [] for s in settings}
    with netcluster.Cluster(hosts=max(host_counts)) as cluster:
        for round_ in range(rounds):
            order = settings if round_ % 2 == 0 else settings[::-1]
            for rate, hosts, comp, lever in order:
                for h in cluster.names:
                    if rate == "unshaped":
                        cluster.unshape(h)
                    else:
                        cluster.shape(h, rate)
                try:
                    got = _measure(cluster, hosts, comp, iters, LEVERS[lever])
                except RuntimeError as e:  # one setting's failure is a finding, not the end
                    print(f"{rate} {hosts} hosts {comp} {lever}: FAILED\n{e}", flush=True)
                    continue
                rows[(rate, hosts, comp, lever)].append(got)
                print(f"{rate} {hosts} hosts {comp} {lever}: "
                      f"{statistics.median(got['seconds']):.3f} s", flush=True)
    out = []
    for (rate, hosts, comp, lever), got in rows.items():
        if not got:
            continue
        seconds = [s for g in got for s in g["seconds"]]
        nbytes = got[0]["bytes_fp32"] // (2 if comp == "fp16" else 1)
        predicted = None if rate == "unshaped" else _predicted(hosts, nbytes, rate)
        med = statistics.median(seconds)
        out.append({"rate": rate, "hosts": hosts, "compression": comp, "lever": lever,
                    "median_s": med, "min_s": min(seconds), "max_s": max(seconds),
                    "bytes": nbytes, "tensors": got[0]["tensors"], "predicted_s": predicted,
                    "measured_over_predicted": med / predicted if predicted else None,
                    "effective_gbit": 2 * (hosts - 1) / hosts * nbytes * 8 / med / 1e9})
    return out


def _train(cluster, hosts: int, compression: str, steps: int, no_plan_env=False) -> dict:
    """train_dist.py on `hosts` hosts, 1 rank and 1 thread each: its metrics.json."""
    import tempfile
    from benchmarks.common import train_dist_args
    names = cluster.names[:hosts]
    hr = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        args = train_dist_args(32, "fp32", 64, steps, tmp, ranks=hosts,
                               extra=[f"--gradient_compression={compression}",
                                      "--intra_op_threads=1", "--inter_op_threads=1"])
        cmd = [sys.executable, "train_dist.py", *args]
        if hosts > 1:  # one host: the compute alone, as the debug mode runs (no launcher)
            cmd = [hr, "-np", str(hosts), "-H", ",".join(f"{h}:1" for h in names),
                   "--network-interfaces", "eth0"] + cmd
        # The launch plans' MPI setting (resnet/runtime/env.py COMM_ENV): without it a rank's
        # MPI spins while it waits and takes the core from its own compute.
        # (train_dist.py also sets it for itself when it is not set: --no_plan_env shows that.)
        from resnet.runtime.env import COMM_ENV
        out = cluster.run(names[0], cmd, cwd=ROOT, timeout=1800, check=False,
                          env=cluster.env(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT,
                                          **({} if no_plan_env else COMM_ENV)))
        if out.returncode:
            raise RuntimeError(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stderr[-3000:]}")
        with open(os.path.join(tmp, "metrics.json")) as f:
            metrics = json.load(f)
    steps_s = metrics["train_step_seconds"]
    return {"step_s": statistics.median(steps_s) if isinstance(steps_s, list) else steps_s,
            "images_per_second": metrics["images_per_second"],
            "command": " ".join(["horovodrun" if cmd[0] == hr else "python"] + cmd[1:]).replace(
                ROOT + "/", "")}


def end_to_end(rates, compressions, steps: int, rounds: int, no_plan_env=False) -> list:
    """train_dist.py's images/s on 2 hosts per link against compute + the modelled allreduce."""
    from tools import netcluster
    from resnet.launch import cost_model
    settings = [("unshaped", 1, "none")] + [(r, 2, c) for r in rates for c in compressions]
    got = {s: [] for s in settings}
    with netcluster.Cluster(hosts=2) as cluster:
        for round_ in range(rounds):
            for rate, hosts, comp in (settings if round_ % 2 == 0 else settings[::-1]):
                for h in cluster.names:
                    cluster.unshape(h) if rate == "unshaped" else cluster.shape(h, rate)
                got[(rate, hosts, comp)].append(_train(cluster, hosts, comp, steps,
                                                       no_plan_env))
                print(f"end to end {rate} {hosts} host(s) {comp}: "
                      f"{got[(rate, hosts, comp)][-1]['images_per_second']:.1f} images/s",
                      flush=True)
    compute = statistics.median(r["step_s"] for r in got[("unshaped", 1, "none")])
    rows = []
    for (rate, hosts, comp), runs in got.items():
        rate_s = statistics.median(r["images_per_second"] for r in runs)
        if hosts == 1 or rate == "unshaped":
            model = None
        else:
            nbytes = cost_model.gradient_bytes("fp16" if comp == "fp16" else "fp32")
            model = 64 * hosts / (compute + _predicted(hosts, nbytes, rate, EMULATED_ROUND_S))
        rows.append({"rate": rate, "hosts": hosts, "compression": comp,
                     "images_per_second": rate_s, "model_images_per_second": model,
                     "measured_over_model": rate_s / model if model else None,
                     "compute_step_s": compute, "command": runs[0]["command"]})
    return rows


def markdown(rows) -> str:
    lines = ["| link | hosts | gradients | lever | measured s, median (min-max) | model s | "
             "measured / model | bus Gb/s |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        model = f"{r['predicted_s']:.3f}" if r["predicted_s"] else "-"
        ratio = f"{r['measured_over_predicted']:.2f}" if r["measured_over_predicted"] else "-"
        lines.append(f"| {r['rate']} | {r['hosts']} | {'fp16' if r['compression'] == 'fp16' else 'fp32'} "
                     f"{r['bytes'] / 2**20:.0f} MiB | {r['lever']} | {r['median_s']:.3f} "
                     f"({r['min_s']:.3f}-{r['max_s']:.3f}) | {model} | {ratio} | "
                     f"{r['effective_gbit']:.2f} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(prog="python -m benchmarks.allreduce", description=__doc__)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--compression", default="none", choices=("none", "fp16"))
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--rates", default="1gbit,10gbit,unshaped")
    p.add_argument("--hosts", default="2,3")
    p.add_argument("--compressions", default="none,fp16")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--levers", nargs="?", const=",".join(LEVERS), default="",
                   help="measure the levers (all, or these comma-separated names)")
    p.add_argument("--no_defaults", action="store_true",
                   help="with --levers: leave out the settings without a lever")
    p.add_argument("--end_to_end", action="store_true")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--no_plan_env", action="store_true",
                   help="--end_to_end as plain horovodrun typed by hand: no launch-plan variables")
    p.add_argument("--out", default=os.path.join(ROOT, "bench_out", "allreduce.json"))
    a = p.parse_args()
    if a.worker:
        return worker(a.compression, a.iters)
    unknown = [n for n in a.levers.split(",") if n and n not in LEVERS]
    if unknown:
        raise SystemExit(f"error: --levers: unknown {unknown}; known: {', '.join(LEVERS)}")
    started = time.time()
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    if a.end_to_end:
        rows = end_to_end(a.rates.split(","), a.compressions.split(","), a.steps, a.rounds,
                          a.no_plan_env)
        with open(a.out.replace(".json", "_end_to_end.json"), "w") as f:
            json.dump({"rows": rows, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
                      f, indent=1)
        for r in rows:
            print(json.dumps(r))
        return
    rows = run(a.rates.split(","), [int(h) for h in a.hosts.split(",")],
               a.compressions.split(","), a.iters, a.rounds,
               [n for n in a.levers.split(",") if n], not a.no_defaults)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"rows": rows, "minutes": (time.time() - started) / 60,
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, f, indent=1)
    print(markdown(rows))


if __name__ == "__main__":
    main()
