"""The optimizer both training loops use: SGD, wrapped by Horovod to average gradients, compiled
with the loss and metric, and handed from rank 0 to every rank."""

import tensorflow as tf

from resnet import model as model_lib
from resnet.config import Config


class SGD(tf.keras.optimizers.SGD):
    """Keras's SGD, its dense momentum update as one kernel per variable. Keras writes it as
    `m = -g * lr + m * momentum; v += m`: five element-wise ops, each a pass over every trained
    weight (the Neg and Mul of the step profile, BENCHMARKS.md). ResourceApplyKerasMomentum is
    the same maths (`m = m * momentum - g * lr; v += m`), and where resnet/kernels is loaded,
    its kernel for that op makes one pass over the three arrays (update.cc; TensorFlow's makes
    two), bit for bit. Same slots, so the same checkpoints; sparse or Nesterov updates, or no
    momentum, stay Keras's."""

    def update_step(self, gradient, variable):
        if isinstance(gradient, tf.IndexedSlices) or self.nesterov or not self.momentum:
            return super().update_step(gradient, variable)
        m = self.momentums[self._index_dict[self._var_key(variable)]]
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=m.handle, lr=tf.cast(self.learning_rate, variable.dtype),
            grad=gradient, momentum=tf.cast(self.momentum, variable.dtype), use_locking=False,
            use_nesterov=False)


def make_optimizer(config: Config, rate, distributed: bool = True):
    """SGD at `rate`; with `distributed`, wrapped to average gradients over the ranks."""
    import horovod.tensorflow.keras as hvd
    optimizer = SGD(rate, momentum=config.momentum)
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


def broadcast(model: tf.keras.Model, optimizer=None) -> None:
    import horovod.tensorflow as hvd
    # Horovod: every rank starts from rank 0's weights and optimizer state (random head, or the
    # checkpoint that rank 0 alone may have read).
    hvd.broadcast_variables(model.variables, root_rank=0)
    if optimizer is not None:
        hvd.broadcast_variables(optimizer.variables, root_rank=0)


def trackables(model, optimizer=None, phase: str = "full") -> dict:
    """What a checkpoint holds: the weights, and the phase's optimizer when given (each phase
    has its own optimizer, saved under its own name)."""
    t = {"model": model}
    if optimizer is not None:
        t[f"optimizer_{phase}"] = optimizer
    return t
