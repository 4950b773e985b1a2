"""--elastic: training that carries on when ranks die or join (Horovod Elastic).

Launched by horovodrun with --min-np/--max-np and a host discovery script
(launch/horovodrun.sh --min-np 2 --max-np 4; README "When things go wrong"). Against fixed-size
training (fixed.py):

- Nothing collective runs before hvd.elastic.run: a worker that joins later executes this module
  from the top while the others wait inside run() for it, so a broadcast or allgather outside it
  would never be matched. Each rank checks --model_dir and loads the data by itself; rank 0 alone
  reads the newest checkpoint (Horovod gives the oldest workers the lowest ranks, so rank 0 is
  never a newcomer), and run() broadcasts its weights and state to everyone.
- The state lives in memory on every rank (weights, momentum, epoch, examples done in the epoch,
  history) and is committed every --commit_every_steps steps. When a rank dies, the survivors'
  allreduce fails, they go back to the last commit, form a new ring with the ranks left, go on.
- The rank count changes mid-run, so nothing may assume it fixed: the rest of the epoch's order
  is dealt afresh to the ranks there are (sharding.train_shard's `start`), and the learning rate
  is set every step from the position in epochs, scaled by the ranks there are now.
- Rank 0, whoever that is now, writes a checkpoint at each epoch end as in the fixed-size mode, so
  losing the whole job still resumes from disk, with or without --elastic.
- No SIGTERM/SIGUSR1 handling: under an elastic launcher a signalled worker simply leaves and the
  others go on; pre-emption of the whole job resumes from the last epoch's checkpoint.
"""

import json
import time

import tensorflow as tf
from absl import logging

from resnet import model as model_lib
from resnet.config import Config
from resnet.data import pipeline, sharding, source
from resnet.runtime import world as runtime
from resnet.training import callbacks as cb
from resnet.training import checkpoints, epoch, frozen, results
from resnet.training.optimizer import compile_model, trackables
from resnet.training.schedule import global_batch_size, learning_rate_at


def _broadcast_json(value):
    """Rank 0's `value` on every rank of the job as it stands now (elastic re-forms it)."""
    import horovod.tensorflow as hvd
    return runtime.broadcast_json(value, hvd.rank() == 0)


def _state_class():
    from horovod.common.elastic import State

    class TrainingState(State):
        """What survivors roll back to. Horovod's KerasState calls optimizer.variables() as a
        method, which Keras 2's optimizers made a property from 2.15 on (tf_keras 2.21 too), so it fails here; this one also
        keeps its Python fields in JSON (see _broadcast_json)."""

        FIELDS = ("epoch", "done", "history", "train_logs")

        def __init__(self, model, optimizer, **fields):
            import horovod.tensorflow as hvd
            self.model, self.optimizer = model, optimizer
            for name in self.FIELDS:
                setattr(self, name, fields[name])
            super().__init__(bcast_object=_broadcast_json, get_rank=hvd.rank)
            self.save()

        def _variables(self):
            return list(self.model.variables) + list(self.optimizer.variables)

        def _fields(self) -> dict:
            return {name: getattr(self, name) for name in self.FIELDS}

        def save(self):
            self._saved_values = [v.numpy() for v in self._variables()]
            self._saved_fields = json.loads(json.dumps(self._fields()))  # a deep copy

        def restore(self):
            for var, value in zip(self._variables(), self._saved_values):
                var.assign(value)
            for name, value in json.loads(json.dumps(self._saved_fields)).items():
                setattr(self, name, value)

        def sync(self):
            import horovod.tensorflow as hvd
            hvd.broadcast_variables(self._variables(), root_rank=0)
            for name, value in _broadcast_json(self._fields()).items():
                setattr(self, name, value)
            self.save()

    return TrainingState


class _Steps(tf.keras.callbacks.Callback):
    """Before each step: the learning rate for this point of the run and this many ranks.
    After it: the examples done in the epoch, and a commit every `commit_every` steps (in this
    order, so a commit records the step it follows)."""

    def __init__(self, state, config: Config, num_train: int, world_size: int):
        super().__init__()
        self.state, self.config = state, config
        self.num_train, self.world_size = num_train, world_size
        self.steps = 0

    def on_train_batch_begin(self, batch, logs=None):
        position = self.state.epoch + self.state.done / self.num_train
        self.model.optimizer.learning_rate.assign(
            learning_rate_at(self.config, position, self.world_size))

    def on_train_batch_end(self, batch, logs=None):
        self.state.done = sharding.examples_done(self.num_train, 1, self.config.batch_size,
                                                 self.world_size, start=self.state.done)
        self.steps += 1
        if self.steps % self.config.commit_every_steps == 0:
            self.state.commit()


def _as_horovod_error(func):
    """Survivors see a dead peer as a TensorFlow op error from a Horovod collective (the
    allreduce in the train step, the metric average, a broadcast). Horovod's elastic.run
    recognises only some op names; every Horovod failure must mean "roll back and re-form"."""
    from horovod.common.exceptions import HorovodInternalError

    def wrapper(state, *args, **kwargs):
        try:
            return func(state, *args, **kwargs)
        except tf.errors.OpError as e:
            if "horovod" in str(e).lower():
                raise HorovodInternalError(e) from e
            raise
    return wrapper


def _start_fields() -> dict:
    return dict(epoch=0, done=0, history=[], train_logs={})


def _resume(config: Config, model, optimizer) -> dict:
    """Rank 0's starting fields: from the newest checkpoint, or the beginning."""
    path = checkpoints.latest(config.model_dir)
    if path is None:
        return _start_fields()
    st = checkpoints.read_state(path)
    if st.phase != "full":
        logging.warning("%s was written in the head-only phase; its optimizer is not reused",
                        path)
    checkpoints.restore(path, trackables(model, optimizer if st.phase == "full" else None))
    done = st.examples_done
    if st.step and not done:  # written before examples_done existed: redo that epoch
        logging.warning("%s has no examples_done; epoch %d restarts from its beginning", path,
                        st.epoch + 1)
    logging.info("resuming from %s: epoch %d, %d examples of it done", path, st.epoch + 1, done)
    return dict(epoch=st.epoch, done=done, history=list(st.history), train_logs={})


def run(config: Config, first: runtime.World) -> dict:
    """Elastic training from `first`, the world as this process started in it."""
    import horovod.tensorflow.keras as hvd
    results.check_model_dir(config.model_dir)  # every rank on its own: no collective here
    model_lib.set_precision(config.precision, warn=first.is_chief, own_kernels=config.own_kernels)
    data = source.load(config, first)
    train_split, test_split, class_names = data.train, data.test, data.class_names
    n = len(train_split)
    model = model_lib.from_config(config.to_dict(), len(class_names), data.input_size)
    # The rate is a variable that _Steps sets before every step.
    optimizer = compile_model(model, config, config.learning_rate)
    # Only rank 0's fields count: run() broadcasts them before the first step.
    fields = _resume(config, model, optimizer) if first.is_chief else _start_fields()
    state = _state_class()(model, optimizer, **fields)
    folds = frozen.Folds()
    started = time.time()
    result = {}

    @hvd.elastic.run
    @_as_horovod_error
    def loop(state):
        world = runtime.current(first)
        runtime.quiet_unless_chief(world)  # rank 0 may be another process after a re-form
        logging.info("elastic: %d rank(s), global batch %d; at epoch %d, %d of %d examples done",
                     world.size, global_batch_size(config, world.size), state.epoch + 1,
                     state.done, n)
        test_metrics = None
        while state.epoch < config.epochs:
            if state.done < n:
                state.train_logs = _fit_rest_of_epoch(state, config, world, model, train_split,
                                                      len(class_names), folds)
                state.commit()  # the epoch's training is safe; a failure now only re-evaluates
            test_metrics = epoch.finish(model, test_split, world, config, class_names,
                                        state.history, state.epoch, "full", state.train_logs,
                                        world_size=world.size)
            state.epoch, state.done, state.train_logs = state.epoch + 1, 0, {}
            epoch.save_checkpoint(config, world, trackables(model, optimizer), epoch=state.epoch,
                                  step=0, phase="full", history=state.history)
            state.commit()
        if test_metrics is None:  # resumed after the last epoch: evaluate what we hold
            test_metrics = epoch.evaluate_test(model, test_split, world, config, class_names)
        result.update(world=world, test_metrics=test_metrics)

    loop(state)
    return results.finish(config, result["world"], model, result["test_metrics"], state.history, {
        "train_minutes": (time.time() - started) / 60, "num_train_examples": n,
        "mode": "elastic", "images_per_second": None}, class_names)


def _fit_rest_of_epoch(state, config: Config, world: runtime.World, model, train_split,
                       num_classes: int, folds: frozen.Folds) -> dict:
    """Train on the examples of epoch `state.epoch` not yet done, dealt to the ranks there are."""
    n = len(train_split)
    shard = sharding.train_shard(n, config.seed, state.epoch, world.rank, world.size,
                                 config.batch_size, start=state.done)
    steps = len(shard.indices) // config.batch_size
    ds = pipeline.train_dataset(train_split, shard, config.batch_size, config.seed, state.epoch,
                                num_classes, image_size=config.image_size)
    progress = cb.ProgressLog(config.log_every_steps, steps, config.epochs,
                              global_batch_size(config, world.size),
                              lambda: state.epoch, lambda: 0)
    callbacks = cb.fit_callbacks(world, lambda: state.epoch, chief=[progress],
                                 first=[_Steps(state, config, n, world.size)])
    with frozen.training(model_lib.backbone(model), folds, config.fold_batchnorm,
                         model_lib.batchnorm_is_affine(config.batchnorm)):
        fit = model.fit(ds, epochs=state.epoch + 1, initial_epoch=state.epoch,
                        steps_per_epoch=steps, verbose=0, callbacks=callbacks)
    return {k: float(v[-1]) for k, v in fit.history.items()}
