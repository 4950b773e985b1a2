"""--eval_only: the test metrics of the newest checkpoint, on any number of ranks."""

from absl import logging

from resnet import config as config_lib
from resnet import model as model_lib
from resnet.config import Config
from resnet.errors import UsageError
from resnet.training import checkpoints, epoch
from resnet.training.optimizer import broadcast, trackables


def trained_size(state: checkpoints.State) -> int:
    """The image size of the last epoch a checkpoint trained (progressive resizing changes it)."""
    last = state.epoch if state.step else state.epoch - 1
    return config_lib.image_size_at(state.config, last)


def precision(requested: str, state: checkpoints.State) -> str:
    """The precision to evaluate at: the one asked for, or for --precision=auto the one the
    checkpoint trained at. A CPU's own choice is no guide here: on an AVX512-BF16 machine it made
    an fp32 checkpoint score 0.3875 where its training's evaluation said 0.39 (test_own_data_real
    before this rule)."""
    if requested != "auto":
        return requested
    # A checkpoint records the resolved precision; one that holds none (or "auto") gets this CPU's.
    return config_lib.resolve_precision(state.config.get("precision", "auto"))


def run(config: Config, world, data, resume, requested_precision: str) -> tuple:
    """(test metrics, what metrics.json adds, history) of checkpoint `resume`.
    requested_precision: --precision as given (before auto is resolved for this CPU)."""
    if resume is None:
        raise UsageError(f"--eval_only: no checkpoint in {checkpoints.directory(config.model_dir)}"
                         "; train first with the same --model_dir")
    state = checkpoints.read_state(resume)
    evaluated_at = precision(requested_precision, state)
    model_lib.set_precision(evaluated_at, warn=world.is_chief)
    # The checkpoint decides the architecture: build with the image size it was trained at.
    image_size = trained_size(state)
    class_names = data.class_names
    model = model_lib.from_config(state.config, len(class_names), data.input_size,
                                  image_size=image_size, weights="none")
    if world.is_chief:
        checkpoints.restore(resume, trackables(model))
    broadcast(model)  # Horovod: rank 0 read the checkpoint; everyone evaluates the same weights
    test_metrics = epoch.evaluate_test(model, data.test, world, config, class_names,
                                       image_size=image_size)
    logging.info("eval_only: test accuracy %.4f on %d images (checkpoint %s, %s)",
                 test_metrics["test_accuracy"], test_metrics["test_examples"], resume,
                 evaluated_at)
    return test_metrics, {"mode": "eval_only", "checkpoint": resume, "image_size": image_size,
                          "precision": evaluated_at, "images_per_second": None}, state.history
