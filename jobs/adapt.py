"""Adapt a segmentation model from a source city to a target city with SemI2I, end to end.

``python jobs/adapt.py --help`` for the options. The code is :mod:`semi2i.cli.adapt`; the installed
command ``semi2i-adapt`` runs the same ``main()``.
"""

import sys

from semi2i.cli.adapt import main, parse_args  # noqa: F401  (parse_args: the tests check commands and manifests with it)

if __name__ == "__main__":
    sys.exit(main())
