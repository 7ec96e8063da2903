"""Which autoscaler a NimService gets: its own spec.autoscaling.autoscaler, else the operator's setting.

One decision for every consumer (the renderers, the status, `nimify doctor`), so the HPA and the ScaledObject
can never both be desired.
"""

from __future__ import annotations

from nimify.api import NimService
from nimify.api.spec import Autoscaler
from nimify.settings import OperatorSettings


def chosen_autoscaler(nim: NimService, settings: OperatorSettings) -> Autoscaler | None:
    """The autoscaler that owns the replica count, or None without spec.autoscaling."""
    scaling = nim.spec.autoscaling
    if scaling is None:
        return None
    return scaling.autoscaler or settings.autoscaler
