"""Condition types and reasons the operator reports on a NimService (kstatus-style, no phase machine)."""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    """`status.conditions[].type`. Ready summarises; Reconciling and Stalled follow kstatus so that
    `kubectl wait`, Argo CD and Flux understand progress and dead ends."""

    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    MODEL_VALIDATED = "ModelValidated"
    ENGINE_READY = "EngineReady"
    AVAILABLE = "Available"


class ConditionReason(StrEnum):
    """`status.conditions[].reason`: CamelCase, specific enough to act on."""

    # Ready / Available
    SERVING = "Serving"
    REPLICAS_UNAVAILABLE = "ReplicasUnavailable"
    PAUSED = "Paused"
    # Reconciling
    FETCHING_MODEL = "FetchingModel"
    BUILDING_ENGINE = "BuildingEngine"
    DEPLOYING = "Deploying"
    SCALING = "Scaling"
    # Stalled and failures
    INVALID_SPEC = "InvalidSpec"
    MODEL_FETCH_FAILED = "ModelFetchFailed"
    MODEL_INVALID = "ModelInvalid"
    CHECKSUM_MISMATCH = "ChecksumMismatch"
    ENGINE_BUILD_FAILED = "EngineBuildFailed"
    ENGINE_BUILD_TIMED_OUT = "EngineBuildTimedOut"
    PARITY_FAILED = "ParityFailed"
    PARITY_INPUTS_REQUIRED = "ParityInputsRequired"  # generated data is not valid for the model: give inputs
    INSUFFICIENT_GPUS = "InsufficientGpus"
    DEPLOYMENT_FAILED = "DeploymentFailed"
    # Success of the intermediate steps
    MODEL_VALID = "ModelValid"
    ENGINE_BUILT = "EngineBuilt"
    ENGINE_CACHE_HIT = "EngineCacheHit"
    ENGINE_NOT_NEEDED = "EngineNotNeeded"
    RECONCILED = "Reconciled"
