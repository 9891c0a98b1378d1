"""The UCR Ray Serve application (``serve.app``) and its deploy config (``serve/config.yaml``).

Kept import-light: ``serve.app`` pulls in Ray, FastAPI and MLflow; this package marker does not.
"""
