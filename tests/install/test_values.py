"""values.yaml and values.schema.json agree with the typed values, and every operator setting is settable."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from nimify.install.values import CHART_OWNED_SETTINGS, ChartValues, default_values, render_values_schema
from nimify.settings import OperatorSettings

CHART = Path(__file__).resolve().parents[2] / "charts" / "nimify"


def test_values_yaml_spells_out_the_defaults() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    ChartValues.model_validate(values)
    assert values == default_values()


def test_schema_matches_the_generator() -> None:
    kept = (CHART / "values.schema.json").read_text()
    assert kept == render_values_schema(), (
        "charts/nimify/values.schema.json is stale: run `bash hack/generate.sh`"
    )


def test_every_operator_setting_is_a_value_except_those_the_chart_sets() -> None:
    schema = json.loads(render_values_schema())
    settings = schema["$defs"]["SettingsValues"]
    assert settings["additionalProperties"] is False
    expected = {
        "".join(part.capitalize() if i else part for i, part in enumerate(name.split("_")))
        for name in OperatorSettings.model_fields
        if name not in CHART_OWNED_SETTINGS
    }
    assert set(settings["properties"]) == expected
