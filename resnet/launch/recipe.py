"""`make train`'s ranks and batch: the default recipe's global batch and peak rate, held at the
rank count this machine runs best, so the layout changes the speed and not the recipe.

  python -m resnet.launch.recipe [--np N]   ->  prints "N --batch_size=B --learning_rate=R"

The recipe (Config's defaults, resnet/presets.py's "fast") was measured at 2 ranks x 32, a global
batch of 64 at peak rate 0.004. --batch_size is per rank and --learning_rate scales with the
ranks (resnet/training/schedule.py), so N ranks take 64 / N images each at 0.004 / N.

Without --np: one rank per socket, the launch plan's own default (resnet/launch/plan.py). On one
socket that is one rank on every core, which trained as fast or faster than one rank per core
on each CPU measured (BENCHMARKS.md, "The layout"); on several sockets a rank per socket keeps
each rank's memory local.
"""

import argparse
import sys
from typing import List, Optional, Sequence

from resnet.config import Config
from resnet.errors import EXIT_USAGE, UsageError
from resnet.launch.layout import default_ranks_per_node
from resnet.runtime import topology as topo

RECIPE_RANKS = 2  # the rank count Config's batch_size and learning_rate were measured at


def flags(ranks: int, config: Config = Config()) -> List[str]:
    """train_dist.py flags that give `ranks` ranks the recipe's global batch and peak rate."""
    global_batch = config.batch_size * RECIPE_RANKS
    if ranks < 1 or global_batch % ranks:
        raise UsageError(f"NP={ranks}: the recipe's global batch of {global_batch} does not "
                         f"split over {ranks} ranks; use a rank count that divides it (1, 2, 4, "
                         "8, ...), or launch/horovodrun.sh -np N -- [flags] for a recipe of "
                         "your own")
    rate = config.learning_rate * RECIPE_RANKS / ranks
    return [f"--batch_size={global_batch // ranks}", f"--learning_rate={rate:g}"]


def default_ranks(t: Optional[topo.Topology] = None) -> int:
    """The launch plan's own default on one node (layout.default_ranks_per_node)."""
    return default_ranks_per_node(t or topo.read())


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m resnet.launch.recipe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--np", type=int, default=None, help="ranks (default: one per socket)")
    args = p.parse_args(argv)
    try:
        ranks = args.np if args.np is not None else default_ranks()
        print(" ".join([str(ranks)] + flags(ranks)))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
