"""The Markdown field reference covers every field of the schema."""

from __future__ import annotations

from nimify.api.crd import nimservice_schema
from nimify.api.docs import render_reference
from nimify.api.schema import walk

REFERENCE = render_reference()


def test_every_object_has_a_section_and_every_field_a_row() -> None:
    for path, node in walk(nimservice_schema()):
        if (
            not path.startswith((".spec", ".status"))
            or node.get("type") != "object"
            or "properties" not in node
        ):
            continue
        heading = "## `" + path[1:].replace("[*]", "[]") + "`"
        assert heading in REFERENCE, heading
        section = REFERENCE.split(heading, 1)[1].split("\n## ", 1)[0]
        for name in node["properties"]:
            assert f"| `{name}` |" in section, f"{path}.{name}"


def test_rules_are_listed_with_their_field() -> None:
    assert "- `spec.replicas`: set replicas or autoscaling, not both" in REFERENCE
    assert "- `spec.storage.storageClassName` (on update): storageClassName is immutable" in REFERENCE


def test_links_point_at_sections() -> None:
    assert "[object](#specengine)" in REFERENCE
    assert "## `spec.engine`" in REFERENCE
