"""Audit: integrity checks of the hash chain, signed checkpoints, findings as plain data."""

from esanalytics.audit.checkpoint import check_checkpoint, make_checkpoint, make_key, read_key
from esanalytics.audit.exceptions import audit_exceptions
from esanalytics.audit.package import AuditPackage, collect
from esanalytics.audit.trail import Scope, trail
from esanalytics.audit.verify import Finding, VerifyResult, verify

__all__ = [
    "AuditPackage",
    "Finding",
    "Scope",
    "VerifyResult",
    "audit_exceptions",
    "check_checkpoint",
    "collect",
    "make_checkpoint",
    "make_key",
    "read_key",
    "trail",
    "verify",
]
