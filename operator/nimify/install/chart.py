"""The files of charts/nimify that are generated from the code, by their path in the chart."""

from __future__ import annotations

from nimify.api.crd import CRD_FILENAME, render_crd
from nimify.install.rbac import REGENERATE_COMMAND, render_rbac_template
from nimify.install.values import SCHEMA_FILENAME, render_values_schema

__all__ = ["REGENERATE_COMMAND", "generated_files"]


def generated_files() -> dict[str, str]:
    """The CRD (the same file as the repository's crds/: Helm installs a chart's crds/ first), the RBAC
    template and the values schema."""
    return {
        f"crds/{CRD_FILENAME}": render_crd(),
        "templates/rbac.yaml": render_rbac_template(),
        SCHEMA_FILENAME: render_values_schema(),
    }
