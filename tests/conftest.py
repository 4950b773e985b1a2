import http.server
import os
import signal
import subprocess
import sys
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cifar_files  # noqa: E402
import resnet  # noqa: E402,F401  (TF_USE_LEGACY_KERAS=1 for every test and every job it starts)

def pytest_collection_modifyitems(config, items):
    """The slow tier first, the fast one last (each in file order): under pytest-xdist the last
    tests each worker takes are then seconds long, so both workers finish together instead of
    one idling while the other runs a slow test it took last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


SHARED = os.path.join(os.path.dirname(ROOT), "shared")
SHARED_WEIGHTS = os.path.join(SHARED, "weights",
                              "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
SHARED_DATA = os.path.join(SHARED, "data", "cifar-10-images.tar.gz")


@pytest.fixture(scope="session")
def splits():
    """A tiny CIFAR-10: 8 train and 4 test images per class."""
    return cifar_files.make_split(8, seed=1), cifar_files.make_split(4, seed=2)


@pytest.fixture(scope="session")
def image_tar(tmp_path_factory, splits):
    """The tiny CIFAR-10 as an image-folder .tar.gz, like ../shared/data."""
    root = tmp_path_factory.mktemp("images")
    cifar_files.write_image_folder(str(root / "tree"), *splits)
    return cifar_files.make_tar(str(root / "tree"), str(root / "cifar-10-images.tar.gz"),
                                "cifar-10-images")


def job_env(**extra):
    """Environment for a training subprocess: quiet TF, one thread per rank, no site config."""
    env = dict(os.environ)
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1",
                "CUDA_VISIBLE_DEVICES": ""})
    env.update(extra)
    return env


def plain_keras(model_file, expr):
    """Load model_file in a fresh process that never imports resnet (only TensorFlow and the
    Keras it selects) and return what `expr` of the loaded model `m` prints."""
    code = ("import tensorflow as tf; m = tf.keras.models.load_model(%r); print(%s)"
            % (str(model_file), expr))
    env = job_env()
    env.pop("PYTHONPATH")
    out = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(str(model_file)),
                         env=env, capture_output=True, text=True, timeout=300, check=True)
    return out.stdout.strip().splitlines()[-1]


def run_job(args, np_ranks=None, timeout=900, env=None, check=True, launch=None):
    """Run train_dist.py for real: plain python, under horovodrun -np N, or through a launch/
    script (`launch=["horovodrun.sh", "-np", "2"]`)."""
    cmd = [sys.executable, os.path.join(ROOT, "train_dist.py")] + list(args)
    if np_ranks:
        cmd = horovodrun(np_ranks) + cmd
    if launch:
        cmd = [os.path.join(ROOT, "launch", launch[0])] + list(launch[1:]) + ["--"] + list(args)
    proc = subprocess.run(cmd, cwd=ROOT, env=env or job_env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-8000:]}")
    return proc


def horovodrun(np_ranks):
    hr = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    # horovodrun itself adds Open MPI's --allow-run-as-root (CI runs as root).
    return [hr, "-np", str(np_ranks), "-H", f"localhost:{np_ranks}"]


def start_until(cmd, text, env=None):
    """Start `cmd` (stdout and stderr merged) and read its output up to the first line holding
    `text`; (process, the output so far). The rest is left to read."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env or job_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            break
    return proc, "".join(seen)


def rank_pids(rank, marker, variable="OMPI_COMM_WORLD_RANK", script="train_dist.py"):
    """PIDs of this test's `script` processes (`marker` in the command line, e.g. its
    model_dir) that the launcher started as `rank`: Open MPI sets OMPI_COMM_WORLD_RANK, elastic
    horovodrun HOROVOD_RANK."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if (script.encode() in cmdline and marker.encode() in cmdline
                and f"{variable}={rank}".encode() in environ):
            pids.append(int(pid))
    return pids


@pytest.fixture()
def restored_process_state():
    """job.run sets signal handlers and Keras's precision policy for its process: put them back
    for the tests that run after this one in the same process."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    yield
    for s, h in handlers.items():
        signal.signal(s, h)
    import tensorflow as tf
    tf.keras.mixed_precision.set_global_policy("float32")
    tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": False})


@pytest.fixture()
def served(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(www), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
