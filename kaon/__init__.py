"""Kaon: an open, self-hostable AI platform — train, register and serve deep-learning models."""

from kaon.client import Client, Prediction

__version__ = "0.1.0"
__all__ = ["Client", "Prediction", "__version__"]
