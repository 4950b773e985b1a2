"""Top classes for image files, from a trained --model_dir.

  python predict.py --model_dir=/tmp/resnet_cifar10 cat.png ship.jpg

A thin entry point, as train_dist.py: the work is resnet.predict.predict.
"""

import sys

from absl import app, flags

from resnet.errors import EXIT_USAGE, UsageError

flags.DEFINE_string("model_dir", None, "The --model_dir of a finished training run.")
flags.DEFINE_integer("top", 3, "How many classes to print per image.")
FLAGS = flags.FLAGS


def main(argv):
    paths = argv[1:]
    if not FLAGS.model_dir or not paths:
        raise app.UsageError("usage: python predict.py --model_dir=DIR IMAGE [IMAGE...]")
    from resnet.predict import predict
    try:
        for path, best in predict(FLAGS.model_dir, paths, FLAGS.top):
            print(path + ": " + ", ".join(f"{name} {p:.3f}" for name, p in best))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    app.run(main)
