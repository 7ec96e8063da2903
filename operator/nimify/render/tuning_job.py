"""The tuning Job (spec.triton.tuning): the built engine served by the serving image's Triton, on the GPU
product it will serve on, measured config by config (`nimify tune-job`, nimify.triton.tuning). Pure.

One pod: Triton runs as a native sidecar in explicit model-control mode with the engine and the unit's default
config (loaded at start); `tune` loads each candidate config through Triton's repository API, measures it with
the load generator, and leaves the table and the choice in its termination message, like a conversion. It
first looks for the figures a Job of the same key left in the engine cache (`engines/KEY/tuning/TUNING.json`)
and reports those instead of measuring again. The pod ends when `tune` does, Triton with it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from nimify.api import EngineRecord, NimService, NimServiceSpec, TuningObjective, TuningSpec
from nimify.engine.location import ENGINE_MOUNT, REPOSITORY_MODEL_DIR, requested_gpu_product
from nimify.render.build_job import TERMINATION_LOG
from nimify.render.deployment import MODEL_REPOSITORY
from nimify.render.placement import pod_placement
from nimify.render.sidecar_job import (
    job_container,
    sidecar_job,
    sidecar_pod,
    sidecar_triton_args,
    triton_sidecar,
)
from nimify.render.triton_config import CONFIG_KEY, DEFAULT_CONFIG_KEY
from nimify.render.units import ServingUnit
from nimify.settings import OperatorSettings
from nimify.triton.tuning import Candidate, Objective, SearchSpace

DEFAULT_QUEUE_DELAYS = (0, 100, 500, 2000)
DEFAULT_CONCURRENCY = (1, 4, 16)
DOCUMENT_ENV = "NIMIFY_TUNING"  # cli/tune.py's tune-job reads it
#: Beyond the sweep's budget: Triton's start and the engine's load, and the default config reloaded.
DEADLINE_MARGIN_SECONDS = 900
#: Triton's arguments in the tuning where they differ from the Deployment's: candidates are loaded through the
#: repository API, and a candidate that fails to load is measured as failed, not a server that exits.
_TUNING_ARGS = {"--model-control-mode": "explicit", "--exit-on-error": "false"}


def default_candidate(spec: NimServiceSpec) -> Candidate:
    """The config the spec asks for (instancesPerGpu, dynamicBatching): the one that serves until a tuning
    chooses another, and the sweep's first measurement."""
    batching = spec.triton.dynamic_batching
    return Candidate(
        instances=spec.triton.instances_per_gpu,
        preferred_batch_sizes=tuple(sorted(batching.preferred_batch_sizes or ())),
        max_queue_delay_us=batching.max_queue_delay_microseconds or 0,
    )


def search_space(tuning: TuningSpec, max_batch_size: int) -> SearchSpace:
    """The candidates spec.triton.tuning bounds, Nimify's defaults where it leaves a part out."""
    default = SearchSpace.default_for(max_batch_size, max_instances=tuning.max_instances)
    preferred = (
        ((), *(tuple(sorted(set(sizes))) for sizes in tuning.preferred_batch_sizes))
        if tuning.preferred_batch_sizes
        else default.preferred_batch_sizes
    )
    if max_batch_size < 1:
        preferred = ((),)  # a model that does not batch has no batcher to tune
    return SearchSpace(
        instances=tuple(range(1, tuning.max_instances + 1)),
        preferred_batch_sizes=tuple(dict.fromkeys(preferred)),
        max_queue_delays_us=tuple(tuning.max_queue_delays_microseconds or DEFAULT_QUEUE_DELAYS)
        if max_batch_size >= 1
        else (0,),
        concurrency=tuple(tuning.concurrency or DEFAULT_CONCURRENCY),
    )


def objective(tuning: TuningSpec) -> Objective:
    if tuning.objective == TuningObjective.MIN_LATENCY:
        return Objective("minLatency", request_rate=tuning.request_rate)
    return Objective("maxThroughput", p99_budget_ms=tuning.p99_latency_budget_milliseconds)


def gpu_product(nim: NimService, record: EngineRecord) -> str:
    return (
        requested_gpu_product(nim)
        or record.engine.gpu_product
        or ("cpu" if not nim.spec.resources.gpus else "")
    )


def tuning_document(unit: ServingUnit, record: EngineRecord) -> dict[str, Any]:
    """What a tuning measures, and with what: its key hashes all of it."""
    tuning = unit.spec.triton.tuning
    assert tuning is not None
    max_batch_size = record.engine.max_batch_size or 0
    return {
        "engine": unit.location.cache_key,
        "gpuProduct": gpu_product(unit.nimservice, record),
        "image": unit.spec.triton.image,
        "resources": unit.spec.resources.model_dump(mode="json", by_alias=True, exclude_none=True),
        "default": default_candidate(unit.spec).to_json(),
        "objective": objective(tuning).to_json(),
        "space": search_space(tuning, max_batch_size).to_json(),
        "budgetSeconds": tuning.time_budget_seconds,
        "trialSeconds": tuning.trial_seconds,
    }


def tuning_key(unit: ServingUnit, record: EngineRecord) -> str:
    canonical = json.dumps(tuning_document(unit, record), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def tuning_job_name(claim: str, key: str) -> str:
    return f"nimify-tune-{hashlib.sha256(f'{claim}/{key}'.encode()).hexdigest()[:20]}"


def cache_file(unit: ServingUnit, key: str) -> str:
    """Where the tuning's figures stay in the engine cache, beside the engine (on the claim)."""
    return f"{ENGINE_MOUNT}/{unit.location.directory}/tuning/{key}.json"


def render_tuning_job(
    nim: NimService, unit: ServingUnit, record: EngineRecord, key: str, settings: OperatorSettings
) -> dict[str, Any]:
    """The Job that measures `unit`'s engine for its tuning `key`, where a replica of it would run."""
    spec = unit.spec
    http_port = spec.expose.http_port
    model_dir = f"{MODEL_REPOSITORY}/{unit.model_name}"
    measured = tuning_document(unit, record)
    document = {
        "url": f"http://127.0.0.1:{http_port}",
        "model": unit.model_name,
        "space": measured["space"],
        "objective": measured["objective"],
        "default": measured["default"],
        "budgetSeconds": measured["budgetSeconds"],
        "trialSeconds": measured["trialSeconds"],
        "cacheFile": cache_file(unit, key),
        "key": key,
    }
    # Started before `tune` (once it is live), stopped once `tune` ends.
    triton = triton_sidecar(
        spec,
        settings,
        sidecar_triton_args(spec, _TUNING_ARGS, f"--load-model={unit.model_name}"),
        [
            {
                "name": "engines",
                "mountPath": model_dir,
                "readOnly": True,
                "subPath": f"{unit.location.repository}/{REPOSITORY_MODEL_DIR}",
            },
            {
                "name": "triton-config",
                "mountPath": f"{model_dir}/{CONFIG_KEY}",
                "subPath": DEFAULT_CONFIG_KEY,
                "readOnly": True,
            },
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    )
    tune = job_container(
        "tune",
        settings.onnxruntime_builder_image,
        settings,
        command=["nimify", "tune-job", f"--termination-log={TERMINATION_LOG}"],
        env=[{"name": DOCUMENT_ENV, "value": json.dumps(document, separators=(",", ":"))}],
        # The load generator: a core of its own, so that it measures Triton rather than waits for the CPU.
        resources={"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        volumeMounts=[
            {"name": "engines", "mountPath": ENGINE_MOUNT},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        terminationMessagePath=TERMINATION_LOG,
        terminationMessagePolicy="FallbackToLogsOnError",
    )
    pod_spec = sidecar_pod(
        nim,
        settings,
        initContainers=[triton],
        containers=[tune],
        volumes=[
            {"name": "engines", "persistentVolumeClaim": {"claimName": unit.location.claim}},
            {"name": "triton-config", "configMap": {"name": unit.config_map_name}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
            {"name": "tmp", "emptyDir": {}},
        ],
        **pod_placement(
            spec,
            gpu_product=requested_gpu_product(nim) or record.engine.gpu_product,
            tolerate_gpus=bool(spec.resources.gpus),
            node_affinity_only=True,
        ),
    )
    tuning = spec.triton.tuning
    assert tuning is not None
    name = tuning_job_name(unit.location.claim, key)
    deadline = tuning.time_budget_seconds + DEADLINE_MARGIN_SECONDS
    return sidecar_job(nim, name, unit.location.cache_key, pod_spec, deadline, settings)
