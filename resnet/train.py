"""run(config): the whole job for one rank, start to metrics.json (elastic runs: resnet.elastic).

Flow: start Horovod and threads -> the chief checks --model_dir -> load and shard data -> build the
model -> agree on the checkpoint to resume from -> for each phase (head only, then the whole
network): compile, restore, broadcast, fit epoch by epoch, evaluate, checkpoint -> save the model
and the metrics. Every rank runs this; rank-0-only work is gated by world.is_chief in the few
places it appears (chief_callbacks, _chief_*), never by scattered rank checks.
"""

import dataclasses
import os
import platform
import sys
import tempfile
import time
from typing import Optional

import numpy as np
import tensorflow as tf
from absl import logging

from resnet import callbacks as cb
from resnet import (checkpoints, cifar, evaluate, fileio, locate, pipeline, report, runtime,
                    sharding)
from resnet import model as model_lib
from resnet import config as config_lib
from resnet.config import Config
from resnet.errors import UsageError
from resnet.schedule import Plan, learning_rate
from resnet.watchdog import Watchdog

MODEL_FILE = "model.keras"
CLASS_NAMES_FILE = "class_names.json"


@dataclasses.dataclass
class Progress:
    """Where training stands; what a checkpoint's state.json records."""
    epoch: int = 0
    step: int = 0
    history: list = dataclasses.field(default_factory=list)


# --- Start-up ---------------------------------------------------------------------------------

def check_model_dir(model_dir: str) -> None:
    try:
        os.makedirs(model_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=model_dir, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UsageError(f"--model_dir={model_dir}: not writable ({e.strerror}); give a folder "
                         "this job can write") from e


def load_data(config: Config, world: runtime.World):
    """(train, test) Splits. Every rank reads the data itself: it must be on every node."""
    if config.dataset == "synthetic":
        return pipeline.synthetic(config.max_train_examples or 50_000,
                                  config.max_test_examples or 10_000, seed=config.seed)
    if config.download:
        dest = config.data_dir or locate.default_download_dir()
        url = config.download_url or locate.OFFICIAL_URL
        # Rank 0 downloads once; the others wait and read the same file.
        path = runtime.chief_decides(world, lambda: locate.download(dest, url))
    else:
        path = locate.find(config.data_dir)
    data = cifar.load(path, config.max_train_examples, config.max_test_examples)
    if len(data.train) < world.size:
        raise UsageError(f"{len(data.train)} training examples cannot be shared by {world.size} "
                         "ranks; raise --max_train_examples or use fewer ranks")
    if world.is_chief:
        logging.info("data: %s layout from %s: %d train, %d test images", data.layout, path,
                     len(data.train), len(data.test))
    return data.train, data.test


# --- Model, optimizer, restore ----------------------------------------------------------------

def _phases(config: Config):
    """(name, first epoch, end epoch) of each fine-tune phase."""
    phases = []
    if config.freeze_epochs:
        phases.append(("head", 0, config.freeze_epochs))
    phases.append(("full", config.freeze_epochs, config.epochs))
    return phases


def make_optimizer(config: Config, rate, distributed: bool = True):
    """SGD at `rate`; with `distributed`, wrapped to average gradients over the ranks."""
    import horovod.tensorflow.keras as hvd
    optimizer = tf.keras.optimizers.SGD(rate, momentum=config.momentum)
    if not distributed:
        return optimizer
    # Horovod: average gradients over ranks with allreduce before they are applied; fp16
    # compression casts them for the wire only (the average comes back as float32).
    compression = (hvd.Compression.fp16 if config.gradient_compression == "fp16"
                   else hvd.Compression.none)
    return hvd.DistributedOptimizer(optimizer, compression=compression)


def compile_model(model: tf.keras.Model, config: Config, rate, phase: str = "full",
                  distributed: bool = True, optimizer=None):
    """Compile for `phase` with SGD at `rate` (a schedule, or a float the caller sets per step).
    `distributed=False` (one rank, not elastic) leaves Horovod's optimizer out: with nothing to
    average it would still hand every gradient to Horovod's background thread each step.
    An `optimizer` given is reused as it is (another size's view of the same weights)."""
    model_lib.set_trainable(model, phase, config.train_from)
    optimizer = optimizer or make_optimizer(config, rate, distributed)
    model.compile(
        optimizer=optimizer,
        loss=tf.keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        weighted_metrics=[tf.keras.metrics.CategoricalAccuracy(name="accuracy")])
    optimizer.build(model.trainable_variables)  # slots exist before restore and broadcast
    return optimizer


def _broadcast(model: tf.keras.Model, optimizer) -> None:
    import horovod.tensorflow as hvd
    # Horovod: every rank starts from rank 0's weights and optimizer state (random head, or the
    # checkpoint that rank 0 alone may have read).
    hvd.broadcast_variables(model.variables, root_rank=0)
    hvd.broadcast_variables(optimizer.variables, root_rank=0)


def trackables(model, optimizer=None, phase: Optional[str] = None) -> dict:
    t = {"model": model}
    if optimizer is not None:
        t[f"optimizer_{phase}"] = optimizer  # per phase: each phase has its own optimizer
    return t


# --- Training ---------------------------------------------------------------------------------

def _train(config: Config, world: runtime.World, plan: Plan, model, train, test,
           resume: Optional[str], class_names) -> tuple:
    import horovod.tensorflow.keras as hvd
    progress = Progress()
    state = checkpoints.read_state(resume) if resume else None
    if state:
        progress = Progress(state.epoch, state.step, list(state.history))
        if world.is_chief:
            logging.info("resuming from %s: epoch %d, step %d", resume, state.epoch + 1,
                         state.step)
    throughput = cb.Throughput(plan.global_batch_size)
    stop = cb.StopOnSignal(world.size).install()
    watchdog = Watchdog(config.hang_timeout, world.rank,
                        lambda: f"epoch {progress.epoch + 1}, step {progress.step}").start()
    test_metrics = None  # stays None when the checkpoint already holds every epoch
    views = {config.image_size: model}  # progressive resizing: one view per size, same weights

    def view(epoch):
        size = config.image_size_at(epoch)
        if size not in views:
            views[size] = model_lib.at_size(model, size, config.batchnorm)
        return views[size]

    for phase, first, end in _phases(config):
        if progress.epoch >= end:
            continue
        current = view(max(progress.epoch, first))
        # The schedule continues across phases: a later phase's optimizer starts at its first step.
        optimizer = compile_model(current, config,
                                  learning_rate(plan, first * plan.steps_per_epoch), phase,
                                  distributed=world.size > 1)
        if resume and world.is_chief:
            same_phase = state.phase == phase
            checkpoints.restore(resume, trackables(current, optimizer if same_phase else None,
                                                   phase))
        resume = None  # restored once, at the first phase that runs
        _broadcast(current, optimizer)

        def save(step, epoch_done=None):
            if not world.is_chief:
                return
            epoch = progress.epoch if epoch_done is None else epoch_done
            done = sharding.examples_done(len(train), step, config.batch_size, world.size)
            st = checkpoints.State(epoch=epoch, step=step, phase=phase,
                                   config=config.to_dict(), history=progress.history,
                                   examples_done=done)
            checkpoints.save(config.model_dir, trackables(current, optimizer, phase), st,
                             config.keep_checkpoints)

        step_ckpt = (cb.StepCheckpoint(config.checkpoint_every_steps, save,
                                       lambda: progress.step, plan.steps_per_epoch)
                     if config.checkpoint_every_steps else None)
        progress_log = cb.ProgressLog(config.log_every_steps, plan.steps_per_epoch, config.epochs,
                                      plan.global_batch_size, lambda: progress.epoch,
                                      lambda: progress.step)
        fit_callbacks = [
            # Horovod: average the epoch's metrics over ranks, before anything logs them.
            hvd.callbacks.MetricAverageCallback(),
            cb.StopOnNonFinite(lambda: progress.epoch),
            stop,
            watchdog,
        ] + cb.chief_callbacks(world.is_chief, progress_log, throughput,
                               os.path.join(config.model_dir, "logs"), step_ckpt)
        for epoch in range(max(progress.epoch, first), end):
            progress.epoch = epoch
            if view(epoch) is not current:  # progressive resizing: the next size, same optimizer
                current = view(epoch)
                compile_model(current, config, None, phase, optimizer=optimizer)
                if world.is_chief:
                    logging.info("epoch %d: image size %d", epoch + 1,
                                 config.image_size_at(epoch))
            shard = sharding.train_shard(len(train), config.seed, epoch, world.rank, world.size,
                                         config.batch_size)
            ds = pipeline.train_dataset(train, shard, config.batch_size, config.seed, epoch,
                                        skip_steps=progress.step)
            fit = current.fit(ds, epochs=epoch + 1, initial_epoch=epoch, verbose=0,
                            steps_per_epoch=plan.steps_per_epoch - progress.step,
                            callbacks=fit_callbacks)
            if stop.stopped and progress.step + stop.steps_done < plan.steps_per_epoch:
                progress.step += stop.steps_done
                save(progress.step)  # mid-epoch: the resumed run skips the steps already done
                _stop_after_checkpoint(world, stop, f"at epoch {epoch + 1}, step {progress.step}")
            test_metrics = evaluate_test(current, test, world, config, class_names,
                                         watchdog.beat)
            record = {"epoch": epoch + 1, "phase": phase,
                      "train_loss": float(fit.history["loss"][-1]),
                      "train_accuracy": float(fit.history["accuracy"][-1]),
                      "test_loss": test_metrics["test_loss"],
                      "test_accuracy": test_metrics["test_accuracy"]}
            progress.history.append(record)
            progress.step = 0
            if world.is_chief:
                logging.info("epoch %d/%d done: train loss %.4f accuracy %.4f, test loss %.4f "
                             "accuracy %.4f", epoch + 1, config.epochs, record["train_loss"],
                             record["train_accuracy"], record["test_loss"],
                             record["test_accuracy"])
            save(0, epoch_done=epoch + 1)
            if stop.stopped:  # the signal came with the epoch's last step
                _stop_after_checkpoint(world, stop, f"after epoch {epoch + 1}")
        progress.epoch = end
    watchdog.stop()
    return progress, throughput, test_metrics


def _stop_after_checkpoint(world: runtime.World, stop: cb.StopOnSignal, where: str):
    # Horovod: no rank exits before rank 0's checkpoint is on disk; an early exit makes
    # srun --kill-on-bad-exit or mpirun kill rank 0 in the middle of writing it.
    runtime.barrier(world)
    raise cb.Preempted(f"{stop.requested or 'another rank was signalled'}: stopped {where}; "
                       "checkpoint written, run the same command to resume")


def evaluate_test(model, test, world, config, class_names, on_batch=lambda: None) -> dict:
    import horovod.tensorflow.keras as hvd

    def allreduce_sum(values: np.ndarray) -> np.ndarray:
        return hvd.allreduce(tf.constant(values, tf.float64), op=hvd.Sum,
                             name="eval_counts").numpy()
    return evaluate.evaluate(model, test, world.rank, world.size, config.batch_size, class_names,
                             allreduce_sum, on_batch, flip=config.test_time_flip)


# --- Results ----------------------------------------------------------------------------------

def _keras_version() -> str:
    import tf_keras  # what tf.keras is under TF_USE_LEGACY_KERAS=1 (resnet/__init__.py)
    return tf_keras.__version__


def _versions() -> dict:
    import horovod
    return {"tensorflow": tf.__version__, "keras": _keras_version(),
            "horovod": horovod.__version__, "python": platform.python_version(),
            "numpy": np.__version__}


def chief_save_model(config: Config, model, class_names) -> None:
    tmp = os.path.join(config.model_dir, ".tmp-" + MODEL_FILE)
    # An uncompiled view of the same layers: the file then holds no Horovod optimizer or custom
    # schedule, and plain tf.keras.models.load_model opens it without this package.
    tf.keras.Model(model.inputs, model.outputs, name=model.name).save(tmp)
    os.replace(tmp, os.path.join(config.model_dir, MODEL_FILE))
    fileio.write_json_atomic(os.path.join(config.model_dir, CLASS_NAMES_FILE),
                                  list(class_names))


def metrics_dict(config, world, test_metrics, history, extra) -> dict:
    return {**test_metrics, "history": history, "world_size": world.size,
            "global_batch_size": config.batch_size * world.size, "flags": config.to_dict(),
            "versions": _versions(), "command": " ".join(sys.argv), **extra}


def run(config: Config) -> dict:
    """Train (or with --eval_only, evaluate) and return the metrics; rank 0 writes them."""
    config = config.effective()
    if config.elastic:
        from resnet import elastic
        return elastic.run(config)
    world = runtime.start(config.intra_op_threads, config.inter_op_threads)
    placement = runtime.gather_placement(world)
    if world.is_chief:
        logging.info("placement:\n%s", runtime.format_placement(placement))
    if config.debug:
        tf.debugging.set_log_device_placement(True)
    runtime.chief_decides(world, lambda: check_model_dir(config.model_dir))
    model_lib.set_precision(config.precision, warn=world.is_chief)
    class_names = cifar.CLASS_NAMES
    train, test = load_data(config, world)
    resume = runtime.chief_decides(world, lambda: checkpoints.latest(config.model_dir))
    if config.eval_only:
        return _eval_only(config, world, test, resume, class_names)

    plan = Plan(config, world.size, len(train))
    if world.is_chief:
        logging.info("%d rank(s) x batch %d = global batch %d; %d steps/epoch; lr %.4g -> %.4g "
                     "over %d warmup steps, cosine to 0 at step %d; %s, %spx",
                     world.size, config.batch_size, plan.global_batch_size, plan.steps_per_epoch,
                     plan.warmup_start, plan.peak_learning_rate, plan.warmup_steps,
                     plan.total_steps, config.precision,
                     f"{config.start_image_size}px then " * bool(config.start_image_size)
                     + str(config.image_size))
    model = model_lib.build(len(class_names), config.image_size, config.weights, config.seed,
                            config.batchnorm, config.bn_momentum,
                            any_size=bool(config.start_image_size))
    started = time.time()
    progress, throughput, test_metrics = _train(config, world, plan, model, train, test, resume,
                                                class_names)
    if test_metrics is None:  # already trained to --epochs: evaluate what the checkpoint holds
        test_metrics = evaluate_test(model, test, world, config, class_names)
    metrics = metrics_dict(config, world, test_metrics, progress.history, {
        "images_per_second": throughput.images_per_second,
        "train_step_seconds": throughput.warm or throughput.cold,  # rank 0's clock, per step
        "train_minutes": (time.time() - started) / 60,
        "num_train_examples": len(train), "steps_per_epoch": plan.steps_per_epoch,
        "mode": "train"})
    if world.is_chief:
        chief_save_model(config, model, class_names)
        path = report.write(config.model_dir, metrics, class_names)
        logging.info("test accuracy %.4f on %d images; wrote %s", metrics["test_accuracy"],
                     metrics["test_examples"], path)
    return metrics


def _trained_size(state: checkpoints.State) -> int:
    """The image size of the last epoch a checkpoint trained (progressive resizing changes it)."""
    last = state.epoch if state.step else state.epoch - 1
    return config_lib.image_size_at(state.config, last)


def _eval_only(config: Config, world, test, resume, class_names) -> dict:
    if resume is None:
        raise UsageError(f"--eval_only: no checkpoint in {checkpoints.directory(config.model_dir)}"
                         "; train first with the same --model_dir")
    state = checkpoints.read_state(resume)
    # The checkpoint decides the architecture: build with the image size it was trained at.
    image_size = _trained_size(state)
    progressive = bool(state.config.get("start_image_size"))
    model = model_lib.build(len(class_names), image_size, "none", config.seed,
                            state.config.get("batchnorm", "frozen"), any_size=progressive)
    if world.is_chief:
        checkpoints.restore(resume, trackables(model))
    import horovod.tensorflow as hvd
    # Horovod: rank 0 read the checkpoint; everyone evaluates the same weights.
    hvd.broadcast_variables(model.variables, root_rank=0)
    test_metrics = evaluate_test(model, test, world, config, class_names)
    metrics = metrics_dict(config, world, test_metrics, state.history, {
        "mode": "eval_only", "checkpoint": resume, "image_size": image_size,
        "images_per_second": None})
    if world.is_chief:
        report.write(config.model_dir, metrics, class_names)
        logging.info("eval_only: test accuracy %.4f on %d images (checkpoint %s)",
                     metrics["test_accuracy"], metrics["test_examples"], resume)
    return metrics
