"""Saliency methods, their comparison and their metrics.

Importing the package registers every built-in method in :mod:`.registry`, once, in display
order: the Grad-CAM family, the AM difference map, occlusion, local sensitivity, the
meaningful-perturbation mask and the gradient methods. A new built-in method is one module that
calls :func:`registry.register` and one import line here.
"""
# The import order is the display order of the methods: keep it (isort: skip_file).
# ruff: noqa: I001
from . import registry  # noqa: F401  (first: the method modules register into it)
from . import cam  # noqa: F401
from . import am_difference  # noqa: F401
from . import occlusion  # noqa: F401
from . import sensitivity  # noqa: F401
from . import meaningful_mask  # noqa: F401
from . import gradients  # noqa: F401
