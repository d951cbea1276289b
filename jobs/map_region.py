"""Map a whole region with an adapted U-net: chunked, seamless, resumable; zarr + COG + PNG quicklook.

``python jobs/map_region.py --help`` for the options. The code is :mod:`semi2i.cli.map_region`; the installed
command ``semi2i-map-region`` runs the same ``main()``.
"""

import sys

from semi2i.cli.map_region import main, parse_args  # noqa: F401  (parse_args: the tests check commands and manifests with it)

if __name__ == "__main__":
    sys.exit(main())
