#!/usr/bin/env bash
# README's run command: set up what is missing, then train on CIFAR-10 with horovodrun.
#
# Usage: tools/train.sh [train_dist.py flags...]      (NP=4 tools/train.sh for 4 ranks)
# Ranks: one per socket unless NP says; at any rank count the recipe's global batch and peak rate
# hold (resnet/launch/recipe.py). Flags given here come after, and win.
# Uses ../shared's CIFAR-10 and ImageNet weights where they exist; otherwise downloads both
# (--download for the data, Keras's own cache for the weights).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/tools/setup.sh"
shared="$root/../shared"
args=()
if [[ -f "$shared/data/cifar-10-images.tar.gz" ]]; then
  args+=("--data_dir=$shared/data/cifar-10-images.tar.gz")
else
  args+=(--download)
fi
weights="$shared/weights/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
if [[ -f "$weights" ]]; then args+=("--weights=$weights"); else args+=(--weights=imagenet); fi
export PATH="$root/.venv/bin:$PATH"
planned=$(cd "$root" && python -m resnet.launch.recipe ${NP:+--np "$NP"})  # a bad NP stops here
read -r -a recipe <<< "$planned"
exec "$root/launch/horovodrun.sh" -np "${recipe[0]}" -- "${args[@]}" "${recipe[@]:1}" "$@"
