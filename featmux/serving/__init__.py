"""Serving a trained model: `load` + `Predictor.predict`, `export_model`, batch scoring and the HTTP server.

>>> import featmux as fm
>>> model = fm.load("runs/frappe")             # a --checkpoint-dir, or an exported artefact
>>> model.predict(frame)                        # probabilities, one per row
"""

from featmux.embeddings.precision import Precision
from featmux.serving.artefact import Artefact, ArtefactError, read_artefact
from featmux.serving.export import ExportSummary, ScoringGraph, export_model
from featmux.serving.predictor import Backend, Predictor, load

__all__ = [
    "Artefact",
    "ArtefactError",
    "Backend",
    "ExportSummary",
    "Precision",
    "Predictor",
    "ScoringGraph",
    "export_model",
    "load",
    "read_artefact",
]
