"""Answerability as one package: features (a registry), the calibrated model, the decision.

Data flow: :mod:`.features` turns a search's evidence into named numbers; :mod:`.model` is the
logistic model over them with its two thresholds, fitted by :mod:`.calibration` when the index is
built; :mod:`.decision` maps its probability and the asked-detail check to full / partial / none.
The vocabulary-driven checks it relies on are :mod:`.answer_types` and :mod:`.places`.
"""

from assistant.retrieval.scope.decision import COVERAGES, Coverage, Decision, decide, lookup_decision
from assistant.retrieval.scope.features import SCOPE_FEATURES, EvidenceInput, compute_features, feature_fingerprint
from assistant.retrieval.scope.model import ScopeExamples, ScopeModel, fit_scope_model

__all__ = ["COVERAGES", "SCOPE_FEATURES", "Coverage", "Decision", "EvidenceInput", "ScopeExamples", "ScopeModel",
           "compute_features", "decide", "feature_fingerprint", "fit_scope_model", "lookup_decision"]
