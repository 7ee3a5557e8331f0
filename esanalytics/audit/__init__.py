"""Audit: integrity checks of the hash chain, signed checkpoints, findings as plain data."""

from esanalytics.audit.checkpoint import check_checkpoint, make_checkpoint, make_key, read_key
from esanalytics.audit.verify import Finding, VerifyResult, verify

__all__ = [
    "Finding",
    "VerifyResult",
    "check_checkpoint",
    "make_checkpoint",
    "make_key",
    "read_key",
    "verify",
]
