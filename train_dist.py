"""Fine-tune ImageNet ResNet50 on CIFAR-10 across Horovod ranks on CPUs.

  python train_dist.py --data_dir=../shared/data/cifar-10-images.tar.gz   # one process (debug)
  horovodrun -np 4 python train_dist.py --data_dir=...                  # one node, 4 ranks
  mpirun -np 4 --map-by ppr:2:socket:pe=14 python train_dist.py ...      # see launch/
  sbatch launch/slurm_1node.sbatch                                       # Slurm

Kept thin: flags become a frozen Config, resnet.training.job.run does the work. Bad input exits 2
with one line saying what is wrong.
"""

import sys

from absl import app, flags, logging

from resnet import flags as resnet_flags
from resnet.errors import (EXIT_DIVERGED, EXIT_HUNG, EXIT_REQUEUE, EXIT_USAGE,
                           Diverged, Preempted, UsageError)

resnet_flags.define()
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config = resnet_flags.to_config(FLAGS)
        from resnet.training import job  # TensorFlow loads only once the flags are good
        job.run(config)
    except UsageError as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except Preempted as e:  # exit 3: the batch script requeues, the same command resumes
        logging.warning("%s", e)
        sys.exit(EXIT_REQUEUE)
    except Diverged as e:
        print(f"error: {e}. The last good checkpoint is kept. The learning rate is likely too "
              "high for the global batch: lower --learning_rate or raise --warmup_epochs",
              file=sys.stderr)
        sys.exit(EXIT_DIVERGED)
    except Exception as e:  # exit 5, as the watchdog's: a rank stopped, run it again
        from resnet.runtime.world import SHUT_DOWN_HELP, horovod_shut_down
        if not horovod_shut_down(e):
            raise
        print(f"error: {SHUT_DOWN_HELP}", file=sys.stderr)
        sys.exit(EXIT_HUNG)


if __name__ == "__main__":
    app.run(main)
