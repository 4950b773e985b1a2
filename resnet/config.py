"""The run's configuration: one frozen dataclass built from flags at the edge, checked once.

Nothing in resnet/ reads absl FLAGS; train_dist.py turns them into a Config and passes it down.
Values that depend on the number of ranks (global batch, scaled learning rate, steps) live in
resnet.training.schedule.Schedule, computed once the world size is known.
"""

import dataclasses
import os
from typing import Optional

from resnet.errors import UsageError
from resnet.fileio import CHECKOUT

# bf16: Keras's mixed_bfloat16; bf16_amp: TensorFlow's graph pass; bf16_fpmath: oneDNN's math
# mode (resnet/model.py, BF16_MODES). auto: bf16 where the CPU has bf16 arithmetic, else fp32.
PRECISIONS = ("auto", "fp32", "bf16", "bf16_amp", "bf16_fpmath")
DATASETS = ("auto", "cifar10", "cifar100", "synthetic")
LABEL_MODES = ("fine", "coarse")
LOADINGS = ("auto", "memory", "stream")
BATCHNORM = ("frozen", "train")
COMPRESSION = ("none", "fp16")
WARMUP_FROM = ("base", "zero")
# How trained convolutions compute while training (resnet/training/conv_forms.py).
CONV_FORMS = ("auto", "conv", "matmul", "matmul_dw")
STAGES = ("conv1", "conv2", "conv3", "conv4", "conv5")  # ResNet50's stages, input to output
MIN_IMAGE_SIZE = 32  # ResNet50 downsamples 32x: smaller inputs leave nothing to pool
MAX_IMAGE_SIZE = 512  # above it a CPU step takes minutes

# --debug: a first run on a laptop in a minute or two.
DEBUG_TRAIN_EXAMPLES = 256
DEBUG_TEST_EXAMPLES = 128
DEBUG_BATCH_SIZE = 32


@dataclasses.dataclass(frozen=True)
class Config:
    # The defaults are the fastest recipe to 90% measured (presets.py: "fast"; its accuracy and
    # minutes on each CPU: BENCHMARKS.md, Accuracy). With make train's 2 ranks: global batch 64,
    # peak rate 0.004, 96 px, conv1-conv3 frozen, 2 epochs.
    preset: str = ""  # the preset these values started from (presets.py); "" for none
    # Under the checkout, which every node of a cluster shares: a requeued job on another node,
    # or a rank 0 that moved, resumes from it (a node-local /tmp would start over). Across
    # hosts the job checks that every host sees the same folder (runtime/shared_dir.py).
    model_dir: str = os.path.join(CHECKOUT, "runs", "resnet_cifar10")
    data_dir: Optional[str] = None  # None: $CIFAR10_DIR, then ~/.keras/datasets
    # auto: whatever --data_dir holds (CIFAR-10 when it is not given); cifar10/cifar100 also
    # say what to search for and --download, and insist on it.
    dataset: str = "auto"
    label_mode: str = "fine"  # CIFAR-100: its 100 fine classes, or its 20 coarse superclasses
    validation_fraction: float = 0.1  # a class-folder tree without test/: held out per class
    data_loading: str = "auto"  # memory or stream (resnet/data/loading.py), auto: chosen
    skip_bad_images: bool = False  # leave out (and count) bad image files instead of refusing
    download: bool = False
    download_url: Optional[str] = None  # a mirror of the official archive (same MD5)
    max_train_examples: Optional[int] = None
    max_test_examples: Optional[int] = None
    weights: str = "imagenet"  # 'imagenet', 'none' or a path to an .h5
    image_size: int = 96  # pixels fed to ResNet50; the 32x32 images are resized inside the model
    # Progressive resizing: every epoch but the last at this size, the last at image_size (0: off)
    start_image_size: int = 0
    precision: str = "auto"  # bf16 where the CPU has bf16 arithmetic (AMX, AVX512-BF16), else fp32
    batch_size: int = 32  # per rank
    epochs: int = 2
    freeze_epochs: int = 0  # head-only epochs before the whole network trains
    learning_rate: float = 0.002  # for one rank's batch of 32; x ranks. 0.01 at 64 diverged
    warmup_epochs: float = 0.2  # linear warmup to the scaled rate, then cosine decay to 0
    # Where the warmup starts: 'base' is Goyal et al.'s, from --learning_rate (so at 1 rank there
    # is no warmup at all); 'zero' ramps from 0, which a freshly initialized head at a high
    # resolution needs (96 px trained at 0.004 from the first step; 128 px diverged by step 21).
    warmup_from: str = "base"
    momentum: float = 0.9
    batchnorm: str = "frozen"  # 'frozen' (inference mode) or 'train' (batch statistics)
    # The first backbone stage that trains; the ones before it keep their ImageNet weights and,
    # as nothing before them trains, TensorFlow leaves their backward pass out altogether.
    train_from: str = "conv4"
    # auto: each trained convolution as oneDNN's convolution, as a matmul, or as the convolution
    # with its weight gradient as a matmul, whichever this machine ran fastest (timed once per
    # machine); conv: always convolutions; matmul, matmul_dw: always that form.
    # Elastic runs train Keras's convolutions: there auto is conv (effective()). auto with the
    # fold below kept the recipe's accuracy in a full run (BENCHMARKS.md, Accuracy).
    conv_forms: str = "auto"
    # Fold each frozen BatchNorm into the frozen convolution before it while training (the same
    # maths, one pass fewer per frozen feature map: resnet/training/frozen.py).
    fold_batchnorm: bool = True
    # The job's own CPU kernels where TensorFlow's are slow (resnet/kernels, built at set-up);
    # TensorFlow's own where not built, or with False.
    own_kernels: bool = True
    bn_momentum: float = 0.9  # with batchnorm='train': how fast the moving statistics follow
    label_smoothing: float = 0.0
    gradient_compression: str = "none"  # 'fp16': allreduce half the bytes (Horovod Compression)
    seed: int = 0
    eval_only: bool = False
    # Score each test image and its mirror image and average the probabilities: the training
    # augmentation flips, so the mirror is as likely an input; it doubles the evaluation time.
    test_time_flip: bool = False
    debug: bool = False
    log_every_steps: int = 50
    keep_checkpoints: int = 3
    checkpoint_every_steps: int = 0  # 0: at the end of every epoch only
    hang_timeout: float = 1800  # s without a finished step: a rank froze, exit (0: never)
    # s for Horovod's start-up and the first collective: past it, the ranks cannot reach each
    # other over the network they were given; exit naming it (resnet/runtime/startup.py; 0: never)
    startup_timeout: float = 300
    elastic: bool = False  # Horovod Elastic: ranks may die or join (resnet/training/elastic.py)
    commit_every_steps: int = 10  # with elastic: steps between in-memory commits
    intra_op_threads: int = 0  # 0: from the launch plan ($OMP_NUM_THREADS) or this rank's CPUs
    inter_op_threads: int = 0  # 0: from $TF_NUM_INTEROP_THREADS, else 1

    def __post_init__(self):
        _check(self)

    def effective(self) -> "Config":
        """The config actually run: --precision=auto becomes this CPU's, --debug shrinks data
        and batch. Every rank resolves auto on its own node: a cluster's nodes are alike (a
        mixed one should name the precision)."""
        config = dataclasses.replace(self, precision=resolve_precision(self.precision),
                                     conv_forms=resolve_conv_forms(self.conv_forms, self.elastic))
        if not self.debug:
            return config
        return dataclasses.replace(
            config,
            max_train_examples=min(self.max_train_examples or DEBUG_TRAIN_EXAMPLES,
                                   DEBUG_TRAIN_EXAMPLES),
            max_test_examples=min(self.max_test_examples or DEBUG_TEST_EXAMPLES,
                                  DEBUG_TEST_EXAMPLES),
            batch_size=min(self.batch_size, DEBUG_BATCH_SIZE),
            log_every_steps=1)

    def image_size_at(self, epoch: int) -> int:
        """The image size epoch `epoch` (0-based) trains and is evaluated at."""
        return image_size_at(self.to_dict(), epoch)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_conv_forms(conv_forms: str, elastic: bool) -> str:
    """'auto' -> 'conv' in an elastic run: choosing would have rank 0 time layers while the others
    wait, a collective before training that a worker joining later would wait in forever."""
    return "conv" if elastic and conv_forms == "auto" else conv_forms


def resolve_precision(precision: str, cpu_flags=None) -> str:
    """'auto' -> 'bf16' on a CPU with bfloat16 arithmetic (faster than float32 there at the same
    accuracy), 'fp32' elsewhere (emulated bf16 runs many times slower): BENCHMARKS.md, "float32
    against bf16". Of the three bf16 modes, Keras's bf16 was the fastest measured at the recipe's
    sizes on AVX512-BF16 ("Which bf16"); AMX is not measured yet. Other values are kept."""
    if precision != "auto":
        return precision
    from resnet.runtime import topology
    flags = topology.cpu_flags() if cpu_flags is None else cpu_flags
    return "bf16" if topology.has_bf16(flags) else "fp32"


def image_size_at(config: dict, epoch: int) -> int:
    """Config.image_size_at for a config as a checkpoint records it (a dict, maybe older)."""
    start = config.get("start_image_size", 0)
    return start if start and epoch < config["epochs"] - 1 else config["image_size"]


def check_image_size(size: int, flag: str = "--image_size") -> None:
    """The one minimum image size, for the flags and for every model view built."""
    if size < MIN_IMAGE_SIZE:
        raise UsageError(f"{flag}={size}: ResNet50 needs at least {MIN_IMAGE_SIZE} pixels (the "
                         "32x32 images are resized up to it)")


def check_weights(weights: str) -> None:
    """--weights: 'imagenet', 'none' or an existing file (whether it fits, model.build says)."""
    if weights not in ("imagenet", "none") and not os.path.isfile(weights):
        raise UsageError(f"--weights={weights}: no such file; pass the ResNet50 no-top .h5, "
                         "'imagenet' (Keras downloads it) or 'none'")


def _check(c: Config) -> None:
    _check_numbers(c)
    _check_choices(c)
    _check_combinations(c)
    _check_sizes_and_paths(c)


def _check_numbers(c: Config) -> None:
    def positive(name, value):
        if value is not None and value <= 0:
            raise UsageError(f"--{name}={value}: must be a positive number")

    positive("batch_size", c.batch_size)
    positive("learning_rate", c.learning_rate)
    positive("log_every_steps", c.log_every_steps)
    positive("keep_checkpoints", c.keep_checkpoints)
    positive("commit_every_steps", c.commit_every_steps)
    positive("max_train_examples", c.max_train_examples)
    positive("max_test_examples", c.max_test_examples)
    for name in ("epochs", "freeze_epochs", "warmup_epochs", "label_smoothing",
                 "checkpoint_every_steps", "hang_timeout", "startup_timeout",
                 "intra_op_threads", "inter_op_threads", "momentum"):
        if getattr(c, name) < 0:
            raise UsageError(f"--{name}={getattr(c, name)}: must not be negative")
    if c.epochs == 0 and not c.eval_only:
        raise UsageError("--epochs=0: nothing to train; give at least 1, or use --eval_only")
    if c.freeze_epochs > c.epochs:
        raise UsageError(f"--freeze_epochs={c.freeze_epochs} is more than --epochs={c.epochs}")


def _check_choices(c: Config) -> None:
    if c.warmup_from not in WARMUP_FROM:
        raise UsageError(f"--warmup_from={c.warmup_from}: must be one of {', '.join(WARMUP_FROM)}")
    if c.label_smoothing >= 1:
        raise UsageError(f"--label_smoothing={c.label_smoothing}: must be below 1")
    if c.gradient_compression not in COMPRESSION:
        raise UsageError(f"--gradient_compression={c.gradient_compression}: use one of "
                         f"{', '.join(COMPRESSION)}")
    if c.precision not in PRECISIONS:
        raise UsageError(f"--precision={c.precision}: use one of {', '.join(PRECISIONS)}")
    if c.train_from not in STAGES:
        raise UsageError(f"--train_from={c.train_from}: use one of {', '.join(STAGES)}")
    if c.batchnorm not in BATCHNORM:
        raise UsageError(f"--batchnorm={c.batchnorm}: use one of {', '.join(BATCHNORM)}")
    if not 0 <= c.bn_momentum < 1:
        raise UsageError(f"--bn_momentum={c.bn_momentum}: must be in [0, 1)")
    for name, value, choices in (("dataset", c.dataset, DATASETS),
                                 ("label_mode", c.label_mode, LABEL_MODES),
                                 ("data_loading", c.data_loading, LOADINGS),
                                 ("conv_forms", c.conv_forms, CONV_FORMS)):
        if value not in choices:
            raise UsageError(f"--{name}={value}: use one of {', '.join(choices)}")
    if not 0 <= c.validation_fraction < 1:
        raise UsageError(f"--validation_fraction={c.validation_fraction}: must be in [0, 1)")


def _check_combinations(c: Config) -> None:
    if c.elastic:
        # Each of these needs a collective before training starts, which elastic mode must not
        # have (a worker joining later would wait in it forever): see resnet/training/elastic.py.
        for flag, value, why in (
                ("freeze_epochs", c.freeze_epochs, "a second optimizer mid-run"),
                ("download", c.download, "rank 0 downloading while the others wait"),
                ("eval_only", c.eval_only, "nothing to be elastic about"),
                (f"conv_forms={c.conv_forms}", c.conv_forms in ("matmul", "matmul_dw"),
                 "elastic trains Keras's convolutions; its auto is conv")):
            if value:
                raise UsageError(f"--elastic does not combine with --{flag} ({why}); run that "
                                 "without --elastic")


def _check_sizes_and_paths(c: Config) -> None:
    if c.start_image_size:
        if not MIN_IMAGE_SIZE <= c.start_image_size <= MAX_IMAGE_SIZE:
            raise UsageError(f"--start_image_size={c.start_image_size}: use {MIN_IMAGE_SIZE} to "
                             f"{MAX_IMAGE_SIZE}, or 0 for every epoch at --image_size")
        if c.epochs < 2:
            raise UsageError(f"--start_image_size trains every epoch but the last at that size; "
                             f"with --epochs={c.epochs} there is no such epoch: give --epochs=2 "
                             "or more, or leave it out")
        if c.elastic:
            raise UsageError("--elastic does not combine with --start_image_size (a model view "
                             "per size is not elastic-safe yet); run that without --elastic")
    check_image_size(c.image_size)
    if c.image_size > MAX_IMAGE_SIZE:
        raise UsageError(f"--image_size={c.image_size}: above {MAX_IMAGE_SIZE} pixels a CPU step "
                         "takes minutes; use 32 to 224 for CIFAR, up to 512 for your own photos")
    check_weights(c.weights)
    if os.path.exists(c.model_dir) and not os.path.isdir(c.model_dir):
        raise UsageError(f"--model_dir={c.model_dir}: is a file; give a folder for checkpoints "
                         "and results")
