"""Cross-validated quality of the out-of-scope flag on the calibration pool.

The pool is the eval set's dev split plus eval/calibration.jsonl; the test split is never
read. Prints the share of out-of-scope questions flagged and of in-scope questions wrongly
flagged, averaged over seeds of 5-fold cross-validation.

    python benchmarks/scope_cv.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from assistant.config import Settings
from assistant.retrieval.calibration import cross_validate_scope
from assistant.retrieval.engine import SearchEngine

if __name__ == "__main__":
    settings = Settings()
    print(json.dumps(cross_validate_scope(SearchEngine.load(settings), settings), indent=2))
