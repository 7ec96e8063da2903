"""The toolkit's one error type: a CamelCase reason for machines, a message naming the culprit for people."""

from __future__ import annotations


class ModelError(Exception):
    """A model, or a step of fetching, validating or converting it, that Nimify refuses.

    `reason` is CamelCase (it becomes a condition reason and the `error.reason` of `nimify convert`'s result);
    `message` names the file or field at fault.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message}
