"""Validate: Great Expectations suites over a dataset partition, with the data profile and Data Docs.

``profile`` computes per-document stats, ``expectations`` holds the suites as code and runs them,
``accounting`` checks that row counts add up, ``stage`` is the ``validate`` stage itself.
"""

from textclf.validate.stage import ValidationResult, validate

__all__ = ["ValidationResult", "validate"]
