"""Top classes for images, from a trained --model_dir or an exported SavedModel, streamed.

  python predict.py --model_dir=runs/resnet_cifar10 cat.png photos/ more.tar.gz
  python predict.py --model_dir=runs/resnet_cifar10/export --out=scores.csv photos/
  horovodrun -np 2 python predict.py --model_dir=... --out=scores.jsonl photos/   # 2 ranks

PATHs are image files, folders of them (recursively), tar archives of images, TFRecord files.
Rows (path, the top classes and their probabilities) go to --out (.csv or .jsonl, written whole
or not at all) or to standard output as CSV. A thin entry point, as train_dist.py: the work is
resnet.serving.batch.predict.
"""

import sys

from absl import app, flags, logging

from resnet.errors import EXIT_USAGE, UsageError

flags.DEFINE_string("model_dir", None, "A finished training run's --model_dir (model.keras), or "
                    "an export.py SavedModel: a version folder or the base path (newest version).")
flags.DEFINE_string("out", None, "A .csv or .jsonl file for the rows (default: CSV on stdout).")
flags.DEFINE_integer("top", 3, "How many classes per image.")
flags.DEFINE_integer("batch_size", 64, "Images per batch (per rank).")
flags.DEFINE_bool("skip_bad_images", False, "Leave out (and count) image files that cannot be "
                  "decoded instead of refusing the run.")
FLAGS = flags.FLAGS


def main(argv):
    paths = argv[1:]
    if not FLAGS.model_dir or not paths:
        raise app.UsageError("usage: python predict.py --model_dir=DIR [--out=FILE.csv|.jsonl] "
                             "PATH [PATH...]")
    from resnet.runtime import world as world_lib
    from resnet.serving.batch import predict
    try:
        world = world_lib.start()
        stats = predict(FLAGS.model_dir, paths, FLAGS.out, FLAGS.top, FLAGS.batch_size,
                        FLAGS.skip_bad_images, world)
    except UsageError as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    if world.is_chief:
        if stats["skipped"]:
            logging.warning("skipped %d undecodable image(s) (--skip_bad_images), e.g. %s",
                            stats["skipped"], ", ".join(stats["skipped_files"][:3]))
        logging.info("scored %d image(s) in %.1f s (%.1f images/s, %d rank(s))%s",
                     stats["images"], stats["seconds"], stats["images_per_second"],
                     stats["ranks"], f"; wrote {FLAGS.out}" if FLAGS.out else "")


if __name__ == "__main__":
    app.run(main)
