#!/usr/bin/env bash
# Sets up a fresh machine: the real Fashion-MNIST files and tcmalloc (Debian packages) and compressdata
# with its dev extra. torch/torchvision are pinned to the builds this project is tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
# tcmalloc: the caching allocator the training commands run on (compressdata/runtime/allocator.py).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || ! ldconfig -p | grep -q libtcmalloc_minimal; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq dataset-fashion-mnist libtcmalloc-minimal4
fi
python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python -m pip install -q -e ".[dev]"
