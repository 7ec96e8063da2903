"""Condition types and reasons the operator reports on a NimService (kstatus-style, no phase machine).

Every reason here is emitted by the controller (a test checks); the conversion Job adds its own, more
specific failure reasons (`ModelNotFound`, `NotOnnx`, ...), which the conditions carry as they are.
"""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    """`status.conditions[].type`. Ready summarises; Reconciling and Stalled follow kstatus so that
    `kubectl wait`, Argo CD and Flux understand progress and dead ends."""

    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    ENGINE_READY = "EngineReady"
    AVAILABLE = "Available"
    #: Only with spec.autoscaling: whether the autoscaler gets its metrics and computes replicas (the HPA's
    #: ScalingActive, or KEDA's ScaledObject Ready and its HPA's ScalingActive). Does not affect Ready.
    SCALING_ACTIVE = "ScalingActive"
    #: Only with spec.triton.tuning: whether the served Triton config is the one the tuning chose (True), or
    #: the default while a sweep runs, or because none met the objective or the sweep failed (False). Does
    #: not affect Ready: the default config serves meanwhile.
    TUNED = "Tuned"
    #: Only with spec.rollout strategy Canary: whether the spec's engine serves all the traffic (True), or a
    #: rollout brings it in, or rolled it back (False). Does not affect Ready: the serving engine serves.
    ROLLED_OUT = "RolledOut"


class ConditionReason(StrEnum):
    """`status.conditions[].reason`: CamelCase, specific enough to act on."""

    # Ready / Available
    SERVING = "Serving"
    REPLICAS_UNAVAILABLE = "ReplicasUnavailable"
    PAUSED = "Paused"
    # Reconciling
    BUILDING_ENGINE = "BuildingEngine"
    CHECKING_PIPELINE = "CheckingPipeline"
    """A pipeline's engines are ready; its check Job compares the served ensemble with the chained models."""
    DEPLOYING = "Deploying"
    SCALING = "Scaling"
    # Stalled and failures
    INVALID_SPEC = "InvalidSpec"
    MODEL_FETCH_FAILED = "ModelFetchFailed"
    CHECKSUM_MISMATCH = "ChecksumMismatch"
    ENGINE_BUILD_FAILED = "EngineBuildFailed"
    ENGINE_BUILD_TIMED_OUT = "EngineBuildTimedOut"
    ENGINE_RESULT_MISSING = "EngineResultMissing"
    """The conversion Job completed, but its pod left no result to read (its command overridden, or it ran
    where no kubelet runs containers): nothing will change until the spec does or the Job is deleted."""
    PIPELINE_TENSOR_UNKNOWN = "PipelineTensorUnknown"
    """A pipeline names a member input or output its model does not have (its conversion says what it has)."""
    PIPELINE_TENSOR_MISMATCH = "PipelineTensorMismatch"
    """Two tensors a pipeline connects differ in dtype, rank or a fixed size."""
    PIPELINE_INPUT_UNFED = "PipelineInputUnfed"
    """A pipeline step leaves an input of its member without a source."""
    PIPELINE_BATCHING_MISMATCH = "PipelineBatchingMismatch"
    """Some pipeline members batch and some do not: an ensemble passes one batch through them all."""
    PIPELINE_CHECK_FAILED = "PipelineCheckFailed"
    """The pipeline's end-to-end check failed: the served ensemble answered otherwise than the members'
    models chained in ONNX Runtime, or could not be run. The chain it served before keeps serving."""
    MODEL_IMAGE_NOT_FOUND = "ModelImageNotFound"
    """The registry has no image under the model's oci:// uri (repository, tag or digest)."""
    MODEL_IMAGE_UNAUTHORIZED = "ModelImageUnauthorized"
    """The registry refused to show the model image: no pull secret for it in spec.imagePullSecrets (or the
    operator's), or one it does not accept."""
    MODEL_IMAGE_UNREACHABLE = "ModelImageUnreachable"
    """The model image's registry did not answer, or answered with an error; tried again at each resync."""
    MODEL_IMAGE_INVALID = "ModelImageInvalid"
    """The oci:// uri names something that is not one model image (an index, another kind of artifact)."""
    MODEL_IMAGE_UNLABELLED = "ModelImageUnlabelled"
    """The model image carries no dev.nimify.* labels: it was not built by `nimify build`."""
    MODEL_IMAGE_MISMATCH = "ModelImageMismatch"
    """A label of the model image contradicts the spec (backend, TensorRT version, GPU product, maximum
    batch size): the message names the label and the field."""
    MODEL_IMAGE_PULL_FAILED = "ModelImagePullFailed"
    """A Triton replica's model-image init container failed to pull the image (its log's last line says
    why); the replicas already serving keep serving."""
    PARITY_FAILED = "ParityFailed"
    PARITY_INPUTS_REQUIRED = "ParityInputsRequired"
    """The conversion could not generate inputs the model accepts for the parity check: give parity inputs."""
    CHILD_REJECTED = "ChildRejected"
    """The apiserver refused a child (admission, validation, quota, permissions); retried with backoff."""
    GATEWAY_API_MISSING = "GatewayApiMissing"
    """spec.expose.httpRoute asks for an HTTPRoute, but the cluster does not serve the Gateway API."""
    KEDA_MISSING = "KedaMissing"
    """KEDA is the autoscaler, but the cluster does not serve KEDA's ScaledObjects."""
    DEPLOYMENT_FAILED = "DeploymentFailed"
    """The Deployment reports it cannot progress (ProgressDeadlineExceeded, or pods it may not create)."""
    # Triton pods in trouble (from the pods' own status)
    INSUFFICIENT_GPUS = "InsufficientGpus"
    UNSCHEDULABLE = "Unschedulable"
    CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
    OOM_KILLED = "OOMKilled"
    IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
    EVICTED = "Evicted"
    """A Triton replica was evicted from its node: by the node's NoExecute taint (the node is NotReady or
    unreachable: lost), or by its kubelet under resource pressure."""
    # Success of the intermediate steps
    ENGINE_BUILT = "EngineBuilt"
    ENGINE_CACHE_HIT = "EngineCacheHit"
    ENGINE_FROM_IMAGE = "EngineFromImage"
    """The engine is a model image's (oci://), served as `nimify build` built and checked it: no Job."""
    RECONCILED = "Reconciled"
    # Tuned
    TUNING = "Tuning"
    """A tuning Job measures the engine's configs; the default config serves meanwhile."""
    TUNING_APPLIED = "TuningApplied"
    """The config the tuning chose serves."""
    TUNING_REUSED = "TuningReused"
    """Another NimService's tuning of the same engine, GPU product and objective serves, with no sweep."""
    TUNING_OBJECTIVE_MISSED = "TuningObjectiveMissed"
    """No measured config met the objective: the default config serves, status.tuning.closest says how
    close the sweep came."""
    TUNING_FAILED = "TuningFailed"
    """The tuning Job failed (its message says why); the default config serves."""
    # RolledOut
    ROLLOUT_PROGRESSING = "RolloutProgressing"
    """A canary rollout's candidate is built, started, or takes its step's share of the traffic."""
    ROLLOUT_PAUSED = "RolloutPaused"
    """spec.rollout.paused holds the candidate at its step."""
    PROMOTING = "Promoting"
    """The steps are done: the serving Deployment rolls to the candidate's engine."""
    PROMOTED = "Promoted"
    """The candidate's engine serves all the traffic; the candidate is gone."""
    ROLLED_BACK = "RolledBack"
    """The candidate failed (its engine, its pods) or was aborted: it is gone, the serving engine kept all
    the traffic; the message says why."""
    # ScalingActive
    METRICS_AVAILABLE = "MetricsAvailable"
    METRIC_UNAVAILABLE = "MetricUnavailable"
    AUTOSCALER_PENDING = "AutoscalerPending"
    AUTOSCALER_NOT_READY = "AutoscalerNotReady"
