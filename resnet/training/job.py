"""run(config): the whole job for one rank, from start-up to metrics.json.

The one place that chooses what runs: --elastic (elastic.py, which must start differently: no
collective before Horovod's elastic loop), --eval_only (eval_only.py), or fixed-size training
(fixed.py). Flow of the last two: start Horovod and threads -> the chief checks --model_dir and
every host that it sees the same one -> load and shard the data -> agree on the checkpoint to
resume from -> train or evaluate -> rank 0 saves the model and writes the metrics.
"""

import time
from typing import Sequence

import tensorflow as tf
from absl import logging

from resnet import model as model_lib
from resnet.config import Config
from resnet.data import source
from resnet.runtime import placement, shared_dir, startup
from resnet.runtime import world as world_lib
from resnet.training import checkpoints, elastic, epoch, eval_only, fixed, results
from resnet.training.schedule import Schedule


def run(config: Config, observers: Sequence = ()) -> dict:
    """Train (or with --eval_only, evaluate) and return the metrics; rank 0 writes them.
    `observers`: Keras callbacks every rank adds to each fit of fixed-size training (the step
    profile of benchmarks/profile.py)."""
    requested, config = config, config.effective()
    # Horovod's start-up is no collective, so elastic mode may start here too.
    # Until the first collective is done, a rank that cannot reach the others ends with a message.
    deadline = startup.Deadline(config.startup_timeout).start()
    world = world_lib.start(config.intra_op_threads, config.inter_op_threads)
    _announce(requested, config)
    if config.elastic:  # Horovod Elastic's rendezvous has its own time limits
        deadline.passed()
        return elastic.run(config, world)
    rows = placement.gather_placement(world)
    deadline.passed()
    logging.info("placement:\n%s", placement.format_placement(rows))
    if config.debug:
        tf.debugging.set_log_device_placement(True)
    world_lib.chief_decides(world, lambda: results.check_model_dir(config.model_dir))
    shared_dir.check(world, config.model_dir)  # across hosts: every host sees rank 0's folder
    data = source.load(config, world)
    resume = world_lib.chief_decides(world, lambda: _resumable(config, len(data.class_names)))
    if config.eval_only:  # at the checkpoint's precision unless one is asked for
        test_metrics, extra, history = eval_only.run(config, world, data, resume,
                                                     requested.precision)
        return results.finish(config, world, None, test_metrics, history, extra,
                              data.class_names)
    return _train(config, world, data, resume, observers)


def _resumable(config: Config, num_classes: int):
    """The checkpoint to resume (or evaluate), if any, checked against the data set."""
    resume = checkpoints.latest(config.model_dir)
    if resume:
        checkpoints.check_classes(resume, num_classes)
    return resume


def _announce(requested: Config, config: Config) -> None:
    if requested.preset:
        logging.info("--preset=%s (resnet/presets.py), the flags given on top", requested.preset)
    if requested.precision == "auto" and not requested.eval_only:  # eval_only: the checkpoint's
        logging.info("--precision=auto: %s (%s)", config.precision,
                     "this CPU has bfloat16 arithmetic" if config.precision == "bf16"
                     else "no AMX or AVX512-BF16 on this CPU")
    if requested.conv_forms != config.conv_forms:
        logging.info("--conv_forms=%s: %s (an elastic run trains Keras's convolutions)",
                     requested.conv_forms, config.conv_forms)


def _train(config: Config, world, data, resume, observers=()) -> dict:
    model_lib.set_precision(config.precision, warn=world.is_chief, own_kernels=config.own_kernels)
    train, test, class_names = data.train, data.test, data.class_names
    schedule = Schedule(config, world.size, len(train))
    logging.info("%d rank(s) x batch %d = global batch %d; %d steps/epoch; lr %.4g -> %.4g over "
                 "%d warmup steps, cosine to 0 at step %d; %s, %spx", world.size,
                 config.batch_size, schedule.global_batch_size, schedule.steps_per_epoch,
                 schedule.warmup_start, schedule.peak_learning_rate, schedule.warmup_steps, schedule.total_steps,
                 config.precision, f"{config.start_image_size}px then " *
                 bool(config.start_image_size) + str(config.image_size))
    model = model_lib.from_config(config.to_dict(), len(class_names), data.input_size)
    started = time.time()
    trainer = fixed.Trainer(config, world, schedule, model, train, test, class_names,
                            observers).run(resume)
    test_metrics = trainer.test_metrics
    if test_metrics is None:  # already trained to --epochs: evaluate what the checkpoint holds
        test_metrics = epoch.evaluate_test(model, test, world, config, class_names)
    throughput = trainer.throughput
    return results.finish(config, world, model, test_metrics, trainer.progress.history, {
        "images_per_second": throughput.images_per_second,
        "train_step_seconds": throughput.warm or throughput.cold,  # rank 0's clock, per step
        "train_minutes": (time.time() - started) / 60,
        "num_train_examples": len(train), "steps_per_epoch": schedule.steps_per_epoch,
        "mode": "train"}, class_names)
