"""Scenario 2: the pile-up. `pytest -n 2`: each worker starts its own harness server
(session fixture in conftest.py) for its test, and the test hangs; pytest-timeout's thread
method dumps the stacks and calls os._exit(1), so the worker's fixture teardown and atexit
handlers never run and each worker's server stays."""

import time

import pytest
from prefect import flow


@flow
def add(a: int, b: int) -> int:
    return a + b


@pytest.mark.timeout(5, method="thread")
def test_first_worker_hangs():
    assert add(1, 2) == 3
    time.sleep(3600)


@pytest.mark.timeout(5, method="thread")
def test_second_worker_hangs():
    assert add(2, 3) == 5
    time.sleep(3600)
