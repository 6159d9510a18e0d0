"""SSL and supervised methods behind one small contract (see ``base.py``).

Importing this package registers the built-in methods; add yours with ``@register_method``.
"""

from trainables.methods import barlow, byol, dino, moco, moco_v3, simclr, supervised  # noqa: F401  (registration)
from trainables.methods.base import (
    METHODS,
    Method,
    build_method,
    build_params,
    method_class,
    register_method,
)

__all__ = ["METHODS", "Method", "build_method", "build_params", "method_class", "register_method"]
