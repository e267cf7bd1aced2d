"""Everything about the CNN (architectures, preprocessing, training, evaluation, bundles); nothing about archives.

Importing it quiets TensorFlow's native start-up lines in this process (see `model.runtime`).
"""

from model import runtime as _runtime

_runtime.install()
