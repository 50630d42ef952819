"""Cross-validated quality of the out-of-scope flag on the calibration pool.

The pool is the eval set's dev split plus eval/calibration.jsonl; the test split is never
read. Prints how often each class of question (in scope, near-miss, other out-of-scope) is answered
"full", "partial" or "none",
averaged over seeds of 5-fold cross-validation.

    python benchmarks/scope_cv.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from assistant.config import Settings
from assistant.retrieval.engine import SearchEngine
from assistant.retrieval.scope.calibration import cross_validate_scope

if __name__ == "__main__":
    settings = Settings()
    print(json.dumps(cross_validate_scope(SearchEngine.load(settings), settings), indent=2))
