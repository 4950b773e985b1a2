"""The command-line flags, and the one function that turns them into a Config.

Defaults come from Config itself, so a flag and the dataclass cannot drift apart. define() and
to_config() take the FlagValues to use (absl's global FLAGS by default), so tests parse argv
lists into a fresh one.
"""

import dataclasses

from absl import flags

from resnet import presets
from resnet.config import (BATCHNORM, COMPRESSION, CONV_FORMS, DATASETS, LABEL_MODES, LOADINGS,
                           PRECISIONS, STAGES, WARMUP_FROM, Config)

_D = Config()  # defaults


class _Definer:
    """absl's DEFINE_* functions, bound to one FlagValues."""

    def __init__(self, flag_values):
        self._fv = flag_values

    def __getattr__(self, name):
        define = getattr(flags, name)
        return lambda *args, **kwargs: define(*args, flag_values=self._fv, **kwargs)


def define(flag_values=flags.FLAGS) -> None:
    f = _Definer(flag_values)
    f.DEFINE_enum("preset", "", [""] + list(presets.PRESETS), "A named recipe (resnet/presets.py): "
                  "fast (the defaults: the fastest measured route to 90%), best (the best 2-epoch "
                  "accuracy measured, at a few times fast's time), debug (a tiny first run); "
                  "their figures: BENCHMARKS.md, Accuracy. "
                  "Flags given on the command line win over it.")
    f.DEFINE_string("model_dir", _D.model_dir, "Checkpoints, logs, the trained model and "
                    "metrics.json. The same --model_dir again resumes.")
    f.DEFINE_string("data_dir", None, "A folder or .tar.gz: CIFAR-10 or CIFAR-100 (python or "
                    "binary batches), a class-folder tree (train/<class>/*.jpg|png, test/ or "
                    "val/), or TFRecords (train-*, validation-*). Default: CIFAR-10 from "
                    "$CIFAR10_DIR, then ~/.keras/datasets.")
    f.DEFINE_enum("dataset", _D.dataset, DATASETS, "auto: what --data_dir holds. cifar10, "
                  "cifar100: search for (and --download) that one. synthetic: random images "
                  "(benchmarks).")
    f.DEFINE_enum("label_mode", _D.label_mode, LABEL_MODES, "CIFAR-100: fine (100 classes) or "
                  "coarse (20 superclasses).")
    f.DEFINE_float("validation_fraction", _D.validation_fraction, "A class-folder tree with no "
                   "test/ or val/: hold out this share of each class (fixed seed).")
    f.DEFINE_enum("data_loading", _D.data_loading, LOADINGS, "memory: decode every image once "
                  "and hold it; stream: read each rank's images from their files as training "
                  "goes (flat memory). auto: memory if the decoded set fits in a quarter of "
                  "the node's RAM per rank; the log says which and why.")
    f.DEFINE_bool("skip_bad_images", _D.skip_bad_images, "Leave out undecodable or truncated "
                  "image files (counted in the log) instead of refusing the data set.")
    f.DEFINE_bool("download", False, "Fetch the official CIFAR-10 (or --dataset=cifar100) "
                  "archive, MD5-checked, if not present.")
    f.DEFINE_string("download_url", None, "A mirror of the official archive (same MD5).")
    f.DEFINE_integer("max_train_examples", None, "Use a fixed subset of this many training "
                     "images.")
    f.DEFINE_integer("max_test_examples", None, "Use a fixed subset of this many test images.")
    f.DEFINE_string("weights", _D.weights, "'imagenet' (Keras download), 'none', or a path to "
                    "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5.")
    f.DEFINE_integer("image_size", _D.image_size, "Pixels fed to ResNet50: CIFAR's 32x32 images "
                     "are resized up inside the model, larger images are cropped to it as they "
                     "are read. More is more accurate and slower (224 for photos).")
    f.DEFINE_integer("start_image_size", _D.start_image_size, "Progressive resizing: every "
                     "epoch but the last trains at this size (e.g. 96), the last at --image_size "
                     "(e.g. 128). 0: every epoch at --image_size.")
    f.DEFINE_enum("precision", _D.precision, PRECISIONS, "auto: bf16 where the CPU has AMX or "
                  "AVX512-BF16, else fp32. bf16 (Keras mixed_bfloat16) trains faster than fp32 "
                  "there at the same accuracy (BENCHMARKS.md); without them it is emulated, "
                  "many times slower, and a warning says so. Two other ways to bf16, for "
                  "comparison: bf16_amp (TensorFlow's oneDNN auto-mixed-precision graph pass) "
                  "and bf16_fpmath (float32, oneDNN computing in bf16: "
                  "ONEDNN_DEFAULT_FPMATH_MODE=BF16). Variables and saved models are float32 in "
                  "all. With --eval_only, auto is the precision the checkpoint trained at.")
    f.DEFINE_integer("batch_size", _D.batch_size, "Per rank; the global batch is this x ranks.")
    f.DEFINE_integer("epochs", _D.epochs, "Epochs in all, head-only ones included.")
    f.DEFINE_integer("freeze_epochs", _D.freeze_epochs, "First train only the new head for this "
                     "many epochs.")
    f.DEFINE_float("learning_rate", _D.learning_rate, "SGD rate for one rank's batch; scaled by "
                   "the number of ranks.")
    f.DEFINE_float("warmup_epochs", _D.warmup_epochs, "Linear warmup to the scaled rate.")
    f.DEFINE_enum("warmup_from", _D.warmup_from, WARMUP_FROM, "base: the warmup starts at "
                  "--learning_rate (none at 1 rank); zero: it starts at 0, at any rank count.")
    f.DEFINE_float("momentum", _D.momentum, "SGD momentum.")
    f.DEFINE_enum("batchnorm", _D.batchnorm, BATCHNORM, "frozen: BatchNorm in inference mode "
                  "(ImageNet statistics); train: batch statistics, tracked with --bn_momentum.")
    f.DEFINE_enum("train_from", _D.train_from, STAGES, "The first ResNet50 stage that trains; "
                  "earlier ones stay as on ImageNet and skip their backward pass (faster).")
    f.DEFINE_enum("conv_forms", _D.conv_forms, CONV_FORMS, "How the trained convolutions "
                  "compute while training: auto: as oneDNN's convolution, as the same maths "
                  "in one matmul, or as the convolution with its weight gradient alone as a "
                  "matmul (matmul_dw), whichever this machine ran fastest for that layer's shape "
                  "(timed once, cached in ~/.cache/resnet-horovod); conv, matmul or matmul_dw: "
                  "always that form. "
                  "Weights, checkpoints and saved models are the same either way; the step's "
                  "speed-up per CPU: BENCHMARKS.md. With --elastic, auto is conv.")
    f.DEFINE_bool("fold_batchnorm", _D.fold_batchnorm, "While training, compute each frozen "
                  "convolution with the frozen BatchNorm after it folded in (one convolution "
                  "and a bias, its weights once in the compute type), and with "
                  "--batchnorm=frozen each trained one whose feature map outweighs its kernel "
                  "with its BatchNorm folded in the step; the evaluation scores with every "
                  "BatchNorm folded in, as the export serves. The same maths up to round-off; "
                  "weights, checkpoints and saved models are unchanged. --nofold_batchnorm: "
                  "Keras's BatchNorm layers as they are.")
    f.DEFINE_bool("own_kernels", _D.own_kernels, "While training, run the job's own CPU "
                  "kernels (resnet/kernels, built by tools/setup.sh for this machine) where "
                  "TensorFlow's are slow: the 3x3 matmul form's columns and their gradient, one "
                  "pass each; in bf16 also the trained BatchNorm fold's kernel product and "
                  "ReluGrad, BiasAddGrad and AddN (a bias gradient summed in float32, where "
                  "TensorFlow's sums in bfloat16). Where not built, TensorFlow's (logged). "
                  "--noown_kernels: TensorFlow's always.")
    f.DEFINE_float("bn_momentum", _D.bn_momentum, "Moving-average momentum with "
                   "--batchnorm=train.")
    f.DEFINE_float("label_smoothing", _D.label_smoothing, "Label smoothing for the training "
                   "loss.")
    f.DEFINE_enum("gradient_compression", _D.gradient_compression, COMPRESSION, "fp16: "
                  "gradients cross the network as float16 (half the allreduce bytes; applied "
                  "in float32). No effect at 1 rank.")
    f.DEFINE_integer("seed", _D.seed, "Head initialisation, data order and augmentation.")
    f.DEFINE_bool("eval_only", False, "Evaluate the newest checkpoint in --model_dir on the "
                  "test set, on any number of ranks.")
    f.DEFINE_bool("test_time_flip", _D.test_time_flip, "Test-time augmentation: score each "
                  "test image and its mirror, average the probabilities (2x the evaluation "
                  "time; training is unchanged).")
    f.DEFINE_bool("debug", False, "A tiny subset, small batches, a log line per step and op "
                  "placement: a first run on a laptop.")
    f.DEFINE_integer("log_every_steps", _D.log_every_steps, "Progress line interval.")
    f.DEFINE_integer("keep_checkpoints", _D.keep_checkpoints, "Checkpoints to keep.")
    f.DEFINE_integer("checkpoint_every_steps", _D.checkpoint_every_steps, "Also checkpoint "
                     "every N steps inside an epoch (0: epoch ends only).")
    f.DEFINE_float("hang_timeout", _D.hang_timeout, "Seconds without a finished step or "
                   "evaluation batch after which a rank decides the job froze and exits 5 "
                   "(0: never). Not with --elastic.")
    f.DEFINE_float("startup_timeout", _D.startup_timeout, "Seconds for Horovod's start-up and "
                   "the first collective; past them the ranks cannot reach each other over the "
                   "network they were given, and each exits 5 naming its host and that network "
                   "(0: never).")
    f.DEFINE_bool("elastic", _D.elastic, "Horovod Elastic: survive ranks that die and take in "
                  "ranks that join (launch with launch/horovodrun.sh --min-np/--max-np).")
    f.DEFINE_integer("commit_every_steps", _D.commit_every_steps, "With --elastic: steps "
                     "between in-memory commits, the point survivors roll back to.")
    f.DEFINE_integer("intra_op_threads", _D.intra_op_threads, "0: from the launch plan "
                     "($OMP_NUM_THREADS) or this rank's CPUs.")
    f.DEFINE_integer("inter_op_threads", _D.inter_op_threads, "0: $TF_NUM_INTEROP_THREADS "
                     "or 1.")


def to_config(flag_values=flags.FLAGS) -> Config:
    """Config from parsed flags: the defaults, then --preset's values, then every flag given on
    the command line (those win over the preset)."""
    explicit = {field.name: flag_values[field.name].value for field in dataclasses.fields(Config)
                if field.name != "preset" and flag_values[field.name].present}
    return presets.apply(flag_values.preset, explicit)
