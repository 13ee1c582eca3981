#!/usr/bin/env bash
# Sets up a fresh machine: the real Fashion-MNIST files (Debian package) and compressdata with its
# dev extra. torch/torchvision are pinned to the builds this project is tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq dataset-fashion-mnist
fi
python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python -m pip install -q -e ".[dev]"
