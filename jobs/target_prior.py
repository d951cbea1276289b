"""Estimate the target city's class proportions from a finished run, without target labels.

``python jobs/target_prior.py --help`` for the options. The code is :mod:`semi2i.cli.target_prior`; the installed
command ``semi2i-target-prior`` runs the same ``main()``.
"""

import sys

from semi2i.cli.target_prior import main, parse_args  # noqa: F401  (parse_args: the tests check commands and manifests with it)

if __name__ == "__main__":
    sys.exit(main())
