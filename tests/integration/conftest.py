import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402


@pytest.fixture
def spool():
    s = harness.Spool(npunts=2)
    yield s
    s.cleanup()


@pytest.fixture
def spool1():
    s = harness.Spool(npunts=1)
    yield s
    s.cleanup()
