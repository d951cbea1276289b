"""SemI2I: semantically consistent image-to-image translation for remote-sensing domain adaptation.

The import package lives in ``platform/semi2i`` so that the stdlib ``platform`` module is never shadowed.
"""

__version__ = "0.1.0"
