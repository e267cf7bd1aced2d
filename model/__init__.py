"""Everything about the CNN (architectures, preprocessing, training, evaluation, bundles); nothing about archives.

Importing it keeps TensorFlow's native start-up lines off the terminal in this process (see `model.native_log`).
"""

from model import native_log as _native_log

_native_log.install()
