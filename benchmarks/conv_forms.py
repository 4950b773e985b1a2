"""What --conv_forms and --fold_batchnorm buy: the job's training step with its trained
convolutions as oneDNN's convolutions (conv), as --conv_forms=auto chooses them on this machine
(auto), all as matmuls (matmul), all with the weight gradient alone as a matmul (matmul_dw),
each also with BatchNorm folded as --fold_batchnorm folds it (+fold), the frozen stages'
alone (+fold_frozen) or every pair, whatever its sizes (+fold_every), and
each layer shape's timing behind auto's choice; +keras_sgd: Keras's own SGD update
instead of the job's fused one (resnet/training/optimizer.py).

  .venv/bin/python -m benchmarks.conv_forms                      # the defaults' recipe, 96 px
  .venv/bin/python -m benchmarks.conv_forms --image_size=128 --batch_size=32
  .venv/bin/python -m benchmarks.conv_forms --train_from=conv1 --image_size=224 --batch_size=16

One process builds the job's model (resnet.model, set_trainable and compile as train_dist.py does,
oneDNN on, the rank's threads as train_dist.py sets them, --weights=none: the same compute) and
traces Keras's own training step once per setting, then runs one step of each in turn, --steps
times: the settings alternate step by step, so a slow spell of this shared machine hits them
alike. Prints images/s, median (min-max) over the steps, each against conv, and the per-shape
timings (forward + all gradients) that auto chose by; writes bench_out/conv_forms.json.
"""

import argparse
import json
import os
import statistics
import time

import resnet  # noqa: F401  (first: the job's environment before TensorFlow loads)
import tensorflow as tf

from benchmarks.common import ROOT, use_job_threads
from benchmarks.harness import machine
from resnet import model as model_lib
from resnet.config import CONV_FORMS, Config
from resnet.training import conv_forms, frozen
from resnet.training.optimizer import compile_model

# --conv_forms, and +fold: --fold_batchnorm (+fold_frozen: its frozen half; +fold_every: its
# trained half without the rule of frozen.ACTIVATIONS_PER_WEIGHT)
SETTINGS = "conv,auto,matmul,matmul_dw,conv+fold,auto+fold_frozen,auto+fold"
FOLDS = ("fold", "fold_frozen", "fold_every")


def _train_steps(model, batch: int, config: Config, settings) -> dict:
    """setting -> (Keras train function traced in that setting, its forms)."""
    compile_model(model, config, 0.001, "full", distributed=False)
    backbone = model_lib.backbone(model)
    layers = conv_forms.trained_layers(backbone)
    side = model.input_shape[1]
    images = tf.random.stateless_uniform([batch, side, side, 3], [0, 1], maxval=255)
    labels = tf.one_hot(tf.range(batch) % 10, 10)
    data = iter(tf.data.Dataset.from_tensors((images, labels, tf.ones([batch]))).repeat())
    steps, folds, fused = {}, frozen.Folds(), model.optimizer
    for setting in settings:
        form, *extras = setting.split("+")
        forms = conv_forms.choose(model, layers, batch, form)
        if "keras_sgd" in extras:  # Keras's own SGD update on the same weights (optimizer.py)
            model.optimizer = tf.keras.optimizers.SGD(0.001, momentum=config.momentum)
            model.optimizer.build(model.trainable_variables)
        rule = frozen.ACTIVATIONS_PER_WEIGHT
        if "fold_every" in extras:  # read when traced: every trained pair folds
            frozen.ACTIVATIONS_PER_WEIGHT = 0.0
        try:
            with conv_forms.training(backbone, forms), \
                    frozen.training(backbone, folds, bool(set(extras) & set(FOLDS)),
                                    trained=bool({"fold", "fold_every"} & set(extras))):
                fn = model.make_train_function(force=True)
                fn(data)  # traced here, inside the setting
        finally:  # the next setting traces with the job's rule
            frozen.ACTIVATIONS_PER_WEIGHT = rule
        model.optimizer = fused
        steps[setting] = (fn, forms)
    return steps, data, len(layers)


def main():
    p = argparse.ArgumentParser(prog="python -m benchmarks.conv_forms",
                                description=__doc__.split("\n")[0])
    p.add_argument("--image_size", type=int, default=96)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--train_from", default="conv4")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--settings", default=SETTINGS,
                   help="comma-separated: --conv_forms values, each optionally +fold "
                   "(--fold_batchnorm as the job folds: frozen pairs, and trained ones by size), "
                   "+fold_frozen (the frozen stages' alone, the fold before 2026-12-03), "
                   "+fold_every (every pair, whatever its sizes) and "
                   "+keras_sgd (Keras's SGD update, not the job's)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench_out"))
    a = p.parse_args()
    settings = a.settings.split(",")
    for s in settings:  # before anything is built: a typo costs no model
        form, *extras = s.split("+")
        if form not in CONV_FORMS or set(extras) - set(FOLDS) - {"keras_sgd"}:
            p.error(f"--settings: {s}: use {', '.join(CONV_FORMS[:-1])} or {CONV_FORMS[-1]} "
                    "(--conv_forms's values), each optionally +fold, +fold_frozen, "
                    "+fold_every and +keras_sgd")
    intra, inter = use_job_threads()
    model_lib.set_precision(a.precision, own_kernels=True)  # as the job trains
    config = Config(train_from=a.train_from, image_size=a.image_size, weights="none")
    model = model_lib.build(10, a.image_size, "none", 0)
    steps, data, trained = _train_steps(model, a.batch_size, config, settings)
    seconds = {setting: [] for setting in settings}
    for _ in range(2):  # warm: every setting's first steps after tracing
        for fn, _ in steps.values():
            fn(data)
    for _ in range(a.steps):
        for setting, (fn, _) in steps.items():
            start = time.perf_counter()
            logs = fn(data)
            float(logs["loss"])  # the step is done once its loss is read
            seconds[setting].append(time.perf_counter() - start)
    rates = {s: [a.batch_size / t for t in v] for s, v in seconds.items()}
    key = conv_forms.machine_key()
    cache = conv_forms.read_cache().get(key, {})
    m = machine()
    result = {"machine": m, "args": vars(a), "threads": [intra, inter], "cache_key": key,
              "images_per_second": rates,
              "forms": {s: conv_forms.summary(f, trained) for s, (_, f) in steps.items()},
              "trained_convolutions": trained, "shapes": cache}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "conv_forms.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"{m['cpu']} ({' '.join(m['flags'])}), {m['date']}; {a.image_size} px, batch "
          f"{a.batch_size}, --train_from={a.train_from}, {a.precision}, threads {intra}x{inter}; "
          f"{a.steps} alternated steps per setting\n")
    print(f"| setting | trained convolutions in another form | images/s, median (min-max) | "
          f"vs {settings[0]} |\n| --- | --- | --- | --- |")
    base = statistics.median(rates[settings[0]])
    for s in settings:
        med = statistics.median(rates[s])
        print(f"| {s} | {result['forms'][s]} | {med:.1f} ({min(rates[s]):.1f}-"
              f"{max(rates[s]):.1f}) | {med / base:.2f} |")
    print(f"\nauto's timings (ms, median of {conv_forms.ROUNDS}, forward + all gradients), "
          f"cache key *{key}*:\n")
    forms = conv_forms.FORMS
    print("| convolution | " + " | ".join(forms) + " | auto |\n|" + " --- |" * (len(forms) + 2))
    for shape, t in sorted(cache.items()):
        if shape.endswith(f"batch {a.batch_size}") and set(forms) <= set(t):
            print(f"| {shape} | " + " | ".join(f"{t[f] * 1e3:.1f}" for f in forms)
                  + f" | {conv_forms.winner(t)} |")


if __name__ == "__main__":
    main()
