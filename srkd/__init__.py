"""srkd: train, distill, compress, evaluate and run single-image super-resolution networks.

``srkd.upscale(image, model=None, ...)`` upscales a numpy array or PIL image (see
:mod:`srkd.upscale`); everything else lives in the subpackages and behind the ``srkd`` command.
"""

__version__ = "0.1.0"

# Cheap: srkd.upscale imports torch only when called. Rebinding the name after the submodule
# import makes ``srkd.upscale`` the function; the module stays importable as ``srkd.upscale``
# through ``from srkd.upscale import upscale_files``.
from .upscale import upscale  # noqa: E402

__all__ = ["__version__", "upscale"]
