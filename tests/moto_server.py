"""The moto S3 server starter and the fault-injecting proxy live in loadtest/faultproxy.py
(the fault trials use them too); these names stay importable from here for the tests."""

from loadtest.faultproxy import SLOW_DOWN, FaultProxy, MotoServer, ThreadedFaultProxy  # noqa: F401 - re-exported
