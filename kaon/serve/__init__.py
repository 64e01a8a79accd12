"""Serving: the Predictor interface, input decoding and the HTTP app."""

from kaon.serve.app import create_app, create_service_app
from kaon.serve.predictor import Predictor, RegistryPredictor

__all__ = ["Predictor", "RegistryPredictor", "create_app", "create_service_app"]
