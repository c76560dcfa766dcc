"""hookdeploy: push to a branch, get a zero-downtime Docker release."""

__version__ = "0.1.0"
