"""Segregation of duties, declared with the domain: two steps of one entity that the same
actor must not both do (open and approve, freeze and unfreeze, cancel and refund).

A rule is data; the audit layer evaluates it over the log in DuckDB
(:func:`esanalytics.audit.audit_exceptions`) and reports each second step whose actor also
did the first step of the same entity.

>>> SegregationRule("OrderPlaced", "OrderApproved").name
'OrderPlaced-then-OrderApproved'
"""

from __future__ import annotations

from dataclasses import dataclass

from esanalytics.exceptions import ValidationError

__all__ = ["SegregationRule"]


@dataclass(frozen=True)
class SegregationRule:
    """The same actor may not record both an event of type ``first`` and one of type
    ``second`` in one stream (entity). ``name`` labels the rule in reports."""

    first: str
    second: str
    name: str = ""

    def __post_init__(self) -> None:
        for step in (self.first, self.second):
            if not isinstance(step, str) or not step.strip():
                raise ValidationError(
                    f"A segregation rule needs two event types, not {step!r}.",
                    hint="name them as the log does, e.g. SegregationRule('OrderPlaced', "
                    "'OrderApproved').",
                )
        if not self.name:
            object.__setattr__(self, "name", f"{self.first}-then-{self.second}")
