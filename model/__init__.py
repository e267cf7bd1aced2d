"""Everything about the CNN; nothing about archives.

Shared at the top: the architectures, the one preprocessing function (`preprocess`), the decision rule
(`decision`), the bundle file (`bundle`) and its guards (`safe_zip`, `versions`). Above them, each importing only
what is listed before it: `formats` (model files as data), `inference` (loading a bundle's model and running it),
`convert` (models from outside into bundles, and to ONNX), `training` (data, training, evaluation, thresholds).

Importing it keeps TensorFlow's native start-up lines off the terminal in this process (see `model.native_log`).
"""

from model import native_log as _native_log

_native_log.install()
