"""eni-guest: make cloud Elastic Network Interfaces work on images that do not know them."""

__version__ = "0.1.0"
