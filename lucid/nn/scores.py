"""Attention scores in base 2: queries scaled by ``LOG2_E`` give scores whose softmax
numerator is ``2 ** s`` (NumPy's and CuPy's faster exponential) instead of ``e ** s``."""
from __future__ import annotations

import math

#: ``1 / ln 2``: queries scaled by it give scores in base 2 (``exp(s) == 2 ** (s / ln 2)``).
LOG2_E = 1.0 / math.log(2.0)
