"""The lake: a local directory or ``s3://bucket/prefix`` holding every stage's input and output.

``layout`` names every key; ``store`` does all I/O; ``partition`` commits folders as a unit.
"""

from textclf.lake.store import Lake, S3Options

__all__ = ["Lake", "S3Options"]
