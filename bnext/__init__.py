"""BNext workbench: binary neural networks (BNext and baselines), trained, distilled,
quantized, packed for XNOR-popcount inference and counted.

Subpackages: :mod:`bnext.nn` (binarizers, binary conv), :mod:`bnext.models` (registry),
:mod:`bnext.data`, :mod:`bnext.train`, :mod:`bnext.kd`, :mod:`bnext.quant`,
:mod:`bnext.packed`, :mod:`bnext.profile`, :mod:`bnext.ablate`.
"""

__version__ = "0.1.0"
