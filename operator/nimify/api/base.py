"""The pydantic base of every API object: camelCase in YAML, docstrings as descriptions, CEL rules checked."""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from nimify.api.validation import FieldError, Rule, TransitionRule, join_path


def _add_cel_rules(schema: dict[str, Any], model: type[Any]) -> None:
    rules: tuple[Rule | TransitionRule, ...] = getattr(model, "cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.to_schema() for rule in rules]


class ApiModel(BaseModel):
    """Spec objects. Like the apiserver, they refuse unknown fields and do not coerce types ("8" is not 8);
    enum fields opt out of strictness so that plain strings validate."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        use_attribute_docstrings=True,
        json_schema_extra=_add_cel_rules,
    )

    cel_rules: ClassVar[tuple[Rule | TransitionRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> Self:
        failures = [
            (rule.field_path, rule.message)
            for rule in self.cel_rules
            if isinstance(rule, Rule) and not rule.holds(self)
        ]
        if failures:
            raise PydanticCustomError(
                "cel_rules",
                "{summary}",
                {
                    "failures": failures,
                    "summary": "; ".join(f"{path or '.'}: {msg}" for path, msg in failures),
                },
            )
        return self

    def transition_errors(self, old: Self, path: str = "") -> list[FieldError]:
        """The update rules (`oldSelf`) broken when this object replaces `old`, here and in nested objects.

        Like the apiserver, a rule is checked only where the object exists both before and after.
        """
        errors = [
            FieldError(join_path(path, rule.field_path or ""), rule.message)
            for rule in self.cel_rules
            if isinstance(rule, TransitionRule) and not rule.holds(self, old)
        ]
        for name, field in type(self).model_fields.items():
            new_value, old_value = getattr(self, name), getattr(old, name)
            if isinstance(new_value, ApiModel) and type(old_value) is type(new_value):
                errors += new_value.transition_errors(old_value, join_path(path, field.alias or name))
        return errors


class StatusModel(ApiModel):
    """Status objects: written by the operator, read leniently so older code can read a newer status."""

    model_config = ConfigDict(extra="ignore", strict=False)
