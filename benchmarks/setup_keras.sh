#!/usr/bin/env bash
# Create benchmarks/.venv-keras: Keras 3 on TensorFlow (CPU) for benchmarks/keras_example.py,
# the Keras example's training loop run as the peer in a speed comparison.
# Safe to re-run: the install is skipped when `import tensorflow, keras` already works.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=benchmarks/.venv-keras
python=$venv/bin/python
if [[ ! -x $python ]]; then
    python3 -m venv "$venv"
fi
if ! "$python" -c "import tensorflow, keras" >/dev/null 2>&1; then
    "$python" -m pip install --quiet --disable-pip-version-check \
        "tensorflow-cpu==2.21.0" "keras==3.15.1" pillow numpy
fi
TF_CPP_MIN_LOG_LEVEL=2 "$python" -c '
import keras, numpy, PIL, sys, tensorflow as tf
print(f"python {sys.version.split()[0]}, tensorflow {tf.__version__}, keras {keras.__version__}, "
      f"numpy {numpy.__version__}, pillow {PIL.__version__}")
'
