"""SemI2I: semantically consistent image-to-image translation for remote-sensing domain adaptation.

The import package lives in ``platform/semi2i`` so that the stdlib ``platform`` module is never shadowed.
"""

import os

# GDAL's block cache defaults to 5% of RAM: streaming a region through it (every block is read once)
# only inflates memory, e.g. ingesting 100 Mpx peaked at 748 MiB with the default, 330 MiB with 64 MB.
# setdefault: a user's own GDAL_CACHEMAX wins.
os.environ.setdefault("GDAL_CACHEMAX", "128")

__version__ = "0.1.0"
