"""UCR: unsupervised composable audio representations."""

__version__ = "0.1.0"
