"""The small `eval decode` arguments several eval tests run."""

from tests.conftest import EMBEDDED

SMALL = ["--model.path", str(EMBEDDED), "--tasks", "[sort, permutation]", "--n", "6", "--batch_size", "4",
         "--policies", "[{name: low_confidence}, {name: threshold, sweep: {threshold: [0.5, 0.9]}}]"]
