"""AoAFFM reproduction library: data, models, training, metrics and reports.

The library knows nothing of DVC; the thin scripts in ``stages/`` call it.
"""

__version__ = "0.1.0"
