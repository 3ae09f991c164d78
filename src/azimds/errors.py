"""The one base of every refusal a person can act on: where, what is wrong, how to fix it.

The fleet model's document and rule errors, the fleet's refusals, configuration errors and the
control plane's answers all carry the same three parts, so each consumer renders them its own
way (a CLI line, a JSON error with ``field``, "file: where: problem. Fix: fix") without parsing
a message back apart. Wire texts of the guest plane are not problems: they live, byte for byte,
in ``guest/errors.py``.
"""

from __future__ import annotations


class Problem(Exception):
    """``problem`` says what is wrong; ``where`` names the field, path or file position it is
    at (empty when it is the whole input); ``fix`` says what to do (empty when obvious)."""

    def __init__(self, problem: str, *, where: str = "", fix: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.where = where
        self.fix = fix

    @property
    def advice(self) -> str:
        """What is wrong and the fix, without the place: for a consumer that shows ``where``
        apart (the control plane's JSON ``field``)."""
        return f"{self.problem}. Fix: {self.fix}" if self.fix else self.problem

    def __str__(self) -> str:
        return f"{self.where}: {self.advice}" if self.where else self.advice
