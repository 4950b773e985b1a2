"""Fixed-size training: the same ranks from the first step to the last (elastic runs: elastic.py).

For each phase (head only, then the whole network): start the phase (compile, restore, broadcast),
then for each epoch fit it and end it (evaluate, record, checkpoint). A signal stops every rank
after the same step, with a checkpoint, so the same command resumes exactly there.
"""

import dataclasses
from typing import List, Optional, Tuple

from absl import logging

from resnet import model as model_lib
from resnet.config import Config
from resnet.data import pipeline, sharding
from resnet.errors import Preempted
from resnet.runtime import world as world_lib
from resnet.training import callbacks as cb
from resnet.training import checkpoints, conv_forms, epoch as epoch_lib, frozen
from resnet.training.optimizer import broadcast, compile_model, trackables
from resnet.training.schedule import Schedule, learning_rate
from resnet.training.watchdog import Watchdog


@dataclasses.dataclass
class Progress:
    """Where training stands; what a checkpoint's state.json records."""
    epoch: int = 0
    step: int = 0
    history: list = dataclasses.field(default_factory=list)


def phases(config: Config) -> List[Tuple[str, int, int]]:
    """(name, first epoch, end epoch) of each fine-tune phase."""
    out = []
    if config.freeze_epochs:
        out.append(("head", 0, config.freeze_epochs))
    out.append(("full", config.freeze_epochs, config.epochs))
    return out


class Trainer:
    """One rank's fixed-size run over `model`'s weights; views at other image sizes share them."""

    def __init__(self, config: Config, world: world_lib.World, schedule: Schedule, model, train,
                 test, class_names, observers=()):
        self.config, self.world, self.schedule = config, world, schedule
        self.train, self.test, self.class_names = train, test, class_names
        self.views = {config.image_size: model}  # progressive resizing: one view per size
        self.progress = Progress()
        self.throughput = cb.Throughput(schedule.global_batch_size)
        self.stop = cb.StopOnSignal(world.size)
        self.watchdog = Watchdog(config.hang_timeout, world.rank, self._where)
        self.test_metrics: Optional[dict] = None  # None: the checkpoint held every epoch
        self.model = model
        self.optimizer = None
        self.phase = ""
        self.observers = list(observers)  # callbacks of every fit on every rank (job.run)
        self.forms = {}  # (phase, image size) -> the layers trained as matmuls (conv_forms.py)
        self.recorded_forms = {}  # the same as the checkpoint resumed holds them (_forms_key)
        self.folds = frozen.Folds()  # the frozen layers' folded weights (frozen.py)

    def _where(self) -> str:
        return f"epoch {self.progress.epoch + 1}, step {self.progress.step}"

    def view(self, epoch: int):
        size = self.config.image_size_at(epoch)
        if size not in self.views:
            self.views[size] = model_lib.at_size(self.views[self.config.image_size], size,
                                                 self.config.batchnorm)
        return self.views[size]

    def run(self, resume: Optional[str]) -> "Trainer":
        state = checkpoints.read_state(resume) if resume else None
        if state:
            self.progress = Progress(state.epoch, state.step, list(state.history))
            self.recorded_forms = dict(state.conv_forms)
            logging.info("resuming from %s: epoch %d, step %d", resume, state.epoch + 1,
                         state.step)
        self.stop.install()
        self.watchdog.start()
        try:
            for phase, first, end in phases(self.config):
                if self.progress.epoch >= end:
                    continue
                self.start_phase(phase, first, resume, state)
                resume = None  # restored once, at the first phase that runs
                for epoch in range(max(self.progress.epoch, first), end):
                    train_logs = self.fit_epoch(epoch)
                    self.end_epoch(epoch, train_logs)
                self.progress.epoch = end
            if resume:  # every phase was done: what the job scores and saves is the checkpoint's
                self.restore_weights(resume)
        finally:
            self.watchdog.stop()
        return self

    def restore_weights(self, resume: str) -> None:
        """The weights of checkpoint `resume` on every rank, without a phase to train: a run of a
        model_dir already trained to --epochs (a repeated command, a requeue after the end)
        evaluates and saves the trained model, not the one it was built with."""
        self.model = self.view(max(self.progress.epoch - 1, 0))
        if self.world.is_chief:
            checkpoints.restore(resume, trackables(self.model))
        broadcast(self.model)

    def start_phase(self, phase: str, first: int, resume: Optional[str], state) -> None:
        """Compile the phase's optimizer, restore the checkpoint (rank 0), broadcast."""
        self.phase, self.model = phase, self.view(max(self.progress.epoch, first))
        # The schedule continues across phases: a later phase's optimizer starts at its first step.
        rate = learning_rate(self.schedule, first * self.schedule.steps_per_epoch)
        self.optimizer = compile_model(self.model, self.config, rate, phase,
                                       distributed=self.world.size > 1)
        if resume and self.world.is_chief:
            same_phase = state.phase == phase
            checkpoints.restore(resume, trackables(self.model,
                                                   self.optimizer if same_phase else None, phase))
        broadcast(self.model, self.optimizer)
        step_ckpt = (cb.StepCheckpoint(self.config.checkpoint_every_steps, self.save,
                                       lambda: self.progress.step, self.schedule.steps_per_epoch)
                     if self.config.checkpoint_every_steps else None)
        progress_log = cb.ProgressLog(
            self.config.log_every_steps, self.schedule.steps_per_epoch, self.config.epochs,
            self.schedule.global_batch_size, lambda: self.progress.epoch, lambda: self.progress.step)
        self.callbacks = cb.fit_callbacks(
            self.world, lambda: self.progress.epoch,
            every_rank=[self.stop, self.watchdog, *self.observers],
            chief=[self.throughput, progress_log, cb.tensorboard(self.config.model_dir)]
            + ([step_ckpt] if step_ckpt else []))

    def fit_epoch(self, epoch: int) -> dict:
        """Train this rank's shard of epoch `epoch`, from the step a resume stands at."""
        self.progress.epoch = epoch
        if self.view(epoch) is not self.model:  # progressive resizing: next size, same optimizer
            self.model = self.view(epoch)
            compile_model(self.model, self.config, None, self.phase, optimizer=self.optimizer)
            logging.info("epoch %d: image size %d", epoch + 1, self.config.image_size_at(epoch))
        shard = sharding.train_shard(len(self.train), self.config.seed, epoch, self.world.rank,
                                     self.world.size, self.config.batch_size)
        ds = pipeline.train_dataset(self.train, shard, self.config.batch_size, self.config.seed,
                                    epoch, len(self.class_names), skip_steps=self.progress.step,
                                    image_size=self.config.image_size)
        steps_left = self.schedule.steps_per_epoch - self.progress.step
        # The training step is traced inside: its convolutions take the chosen forms, and their
        # BatchNorm folded in.
        backbone = model_lib.backbone(self.model)
        with conv_forms.training(backbone, self.conv_forms(epoch)), \
                frozen.training(backbone, self.folds, self.config.fold_batchnorm,
                                model_lib.batchnorm_is_affine(self.config.batchnorm)):
            fit = self.model.fit(ds, epochs=epoch + 1, initial_epoch=epoch, verbose=0,
                                 steps_per_epoch=steps_left, callbacks=self.callbacks)
        if self.stop.stopped and self.progress.step + self.stop.steps_done < self.schedule.steps_per_epoch:
            self.progress.step += self.stop.steps_done
            self.save(self.progress.step)  # mid-epoch: the resumed run skips the steps done
            self._stop_after_checkpoint(f"at epoch {epoch + 1}, step {self.progress.step}")
        return {k: float(v[-1]) for k, v in fit.history.items()}

    def conv_forms(self, epoch: int) -> dict:
        """This phase's forms at epoch `epoch`'s image size, chosen by rank 0 for every rank
        (timings differ between ranks; the numerics must not)."""
        key = (self.phase, self.config.image_size_at(epoch))
        if key not in self.forms:
            layers = conv_forms.trained_layers(model_lib.backbone(self.model))
            recorded = self.recorded_forms.get(_forms_key(key))
            self.forms[key] = world_lib.chief_decides(self.world, lambda: conv_forms.choose(
                self.model, layers, self.config.batch_size, self.config.conv_forms, recorded))
        return self.forms[key]

    def end_epoch(self, epoch: int, train_logs: dict) -> None:
        self.test_metrics = epoch_lib.finish(
            self.model, self.test, self.world, self.config, self.class_names,
            self.progress.history, epoch, self.phase, train_logs, self.watchdog.beat)
        self.progress.step = 0
        self.save(0, epochs_done=epoch + 1)
        if self.stop.stopped:  # the signal came with the epoch's last step
            self._stop_after_checkpoint(f"after epoch {epoch + 1}")

    def save(self, step: int, epochs_done: Optional[int] = None) -> None:
        epoch = self.progress.epoch if epochs_done is None else epochs_done
        done = sharding.examples_done(len(self.train), step, self.config.batch_size,
                                      self.world.size)
        epoch_lib.save_checkpoint(self.config, self.world,
                                  trackables(self.model, self.optimizer, self.phase), epoch=epoch,
                                  step=step, phase=self.phase, history=self.progress.history,
                                  examples_done=done, conv_forms=self._forms_record())

    def _forms_record(self) -> dict:
        """What state.json keeps of the forms: auto's choices, which a resume reuses."""
        if self.config.conv_forms != "auto":
            return {}
        return {**self.recorded_forms, **{_forms_key(k): f for k, f in self.forms.items()}}

    def _stop_after_checkpoint(self, where: str):
        # Horovod: no rank exits before rank 0's checkpoint is on disk; an early exit makes
        # srun --kill-on-bad-exit or mpirun kill rank 0 in the middle of writing it.
        world_lib.barrier(self.world)
        raise Preempted(f"{self.stop.requested or 'another rank was signalled'}: stopped "
                        f"{where}; checkpoint written, run the same command to resume")


def _forms_key(key: Tuple[str, int]) -> str:
    """(phase, image size) as state.json's key: 'full@96'."""
    return f"{key[0]}@{key[1]}"
