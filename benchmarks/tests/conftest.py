"""The benchmark scripts' tests use the fixtures and helpers of the library's tests: tests/ goes
on sys.path (for `from test_evaluate import ...`), and tests/conftest.py is loaded under a name
of its own and re-exported here, so its fixtures (autouse ones included) apply to these tests
and `from conftest import ...` finds the same names whichever conftest was imported last."""

import importlib.util
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2] / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

_spec = importlib.util.spec_from_file_location("ddpm_tests_conftest", TESTS / "conftest.py")
_shared = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _shared
_spec.loader.exec_module(_shared)
globals().update({k: v for k, v in vars(_shared).items() if not k.startswith("__")})
