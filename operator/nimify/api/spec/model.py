"""spec.model: where the model file lives and how it is recognised."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

from pydantic import Field

from nimify.api.base import ApiModel
from nimify.api.spec.fields import DNS1123_LABEL, DNS1123_SUBDOMAIN
from nimify.api.validation import Rule, ValidationReason, cel_string, matches

_PATH = r"(/[^/\s?#]+)+"
HOST_PORT = r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*(:[0-9]{1,5})?"
"""A DNS name or IPv4 address, then an optional port (https:// hosts, oci:// registries)."""
IMAGE_REPOSITORY = r"[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*"
IMAGE_TAG = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"
IMAGE_DIGEST = r"sha256:[a-f0-9]{64}"
#: Each scheme's form, and how the refusal of a uri that misses it describes it.
URI_FORMS: dict[str, tuple[str, str]] = {
    "https": (
        r"https://" + HOST_PORT + _PATH + r"(\?[^\s#]*)?",
        "https://HOST[:PORT]/PATH[?QUERY] (a DNS name, a path of one or more segments, no fragment)",
    ),
    "s3": (
        r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]" + _PATH,
        "s3://BUCKET/KEY (a bucket of 3 to 63 lower-case letters, digits, dots and hyphens)",
    ),
    "gs": (
        r"gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]" + _PATH,
        "gs://BUCKET/OBJECT (a bucket of 3 to 222 lower-case letters, digits, dots, underscores and hyphens)",
    ),
    "pvc": (
        r"pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*" + _PATH,
        "pvc://CLAIM/PATH (a PersistentVolumeClaim of the namespace, then the file's path on it)",
    ),
    "hf": (
        r"hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._-]+)?" + _PATH,
        "hf://ORG/REPO[@REVISION]/PATH (a Hugging Face Hub repository, then the file's path in it)",
    ),
}
MODEL_URI = "^(" + "|".join(form for form, _ in URI_FORMS.values()) + ")$"
"""Every form of a file's uri at once (the fetchers' own check)."""
IMAGE_FORMS: dict[str, tuple[str, str]] = {
    **URI_FORMS,
    "oci": (
        rf"oci://{HOST_PORT}/{IMAGE_REPOSITORY}((:{IMAGE_TAG})(@{IMAGE_DIGEST})?|@{IMAGE_DIGEST})",
        "oci://REGISTRY[:PORT]/REPOSITORY:TAG, ...@sha256:DIGEST or both (a model image nimify build pushed)",
    ),
}
"""A model's uri forms: a file's, or a model image (engine/model_image.py)."""


def _scheme(forms: dict[str, tuple[str, str]]) -> str:
    return r"^(" + "|".join(forms) + ")://"


DOT_DOT_SEGMENT = r"(^|/)(\.|%2[eE]){2}(/|[?#]|$)"
PLAN_SUFFIX = r"\.(plan|engine)([?#].*)?$"
ONNX_SUFFIX = r"\.onnx([?#].*)?$"


def _takes_form(field: str, scheme: str, whole: str) -> Callable[[Any], bool]:
    def holds(model: Any) -> bool:
        value: str = getattr(model, field)
        return not value.startswith(f"{scheme}://") or matches(whole, value)

    return holds


def uri_rules(field: str = "uri", forms: dict[str, tuple[str, str]] = URI_FORMS) -> tuple[Rule, ...]:
    """The rules of a uri field taking `forms` (a file's by default), one per way it can be wrong, each with
    a message that says what is wrong: a schema pattern with every form in one regular expression would
    answer with the expression."""
    schemes = ", ".join(f"{scheme}://" for scheme in forms)
    prefix = _scheme(forms)
    rules = [
        Rule(
            cel=f"self.{field}.matches({cel_string(prefix)})",
            message=f"the uri must start with one of {schemes} (plain http and others are not fetched)",
            holds=lambda model: matches(prefix, getattr(model, field)),
            field_path=f".{field}",
        )
    ]
    for scheme, (form, described) in forms.items():
        whole = f"^{form}$"
        rules.append(
            Rule(
                cel=f"!self.{field}.startsWith('{scheme}://') || self.{field}.matches({cel_string(whole)})",
                message=f"a {scheme}:// uri takes the form {described}",
                holds=_takes_form(field, scheme, whole),
                field_path=f".{field}",
            )
        )
    return tuple(rules)


class ModelFormat(StrEnum):
    """What the model file is."""

    ONNX = "onnx"
    TENSORRT_PLAN = "tensorrt-plan"


class ModelSpec(ApiModel):
    """The model to serve: where to fetch it and how to recognise it."""

    uri: str = Field(max_length=2048)
    """Where the model file lives: https://host/path, s3://bucket/key, gs://bucket/key, pvc://claim/path (a
    PersistentVolumeClaim in the same namespace) or hf://org/repo[@revision]/path (Hugging Face Hub). An ONNX
    model (.onnx) or a serialized TensorRT engine (.plan, .engine). Path segments `..` are refused. Or a model
    image `nimify build` pushed, oci://registry/repository:tag or ...@sha256:digest: served as built, without
    a conversion Job (a tag is resolved once per generation; status.modelImage has the digest)."""

    sha256: str | None = Field(default=None, pattern=r"^[a-f0-9]{64}$", max_length=64)
    """Expected SHA-256 digest of the file (64 lower-case hex digits); a download that differs is refused."""

    format: ModelFormat | None = Field(default=None, strict=False)
    """onnx or tensorrt-plan. Inferred from the uri's suffix (.onnx; .plan or .engine) when left out."""

    credentials_secret: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    """Secret in the same namespace whose keys become the fetcher's environment: AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY (s3), GOOGLE_APPLICATION_CREDENTIALS_JSON (gs), HF_TOKEN (hf), or AUTHORIZATION (an
    HTTP Authorization header value for https)."""

    service_account_name: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    """ServiceAccount (same namespace) the conversion Job runs as, so that workload identity (EKS IRSA or Pod
    Identity, GKE Workload Identity, Azure Workload Identity) grants it read access to the model's bucket
    without a credentialsSecret. The operator's default (NIMIFY_BUILD_SERVICE_ACCOUNT) when left out, else
    the namespace's default. The pod gets no Kubernetes API token either way: identity webhooks mount their
    own."""

    name: str | None = Field(default=None, pattern=DNS1123_LABEL, max_length=63)
    """Model name inside Triton (the /v2/models/NAME endpoints). Defaults to the NimService's name."""

    cel_rules = (
        *uri_rules(forms=IMAGE_FORMS),
        Rule(
            cel="!self.uri.startsWith('oci://') || !has(self.sha256)",
            message="an oci:// model is pinned by its uri (REPOSITORY@sha256:DIGEST), not by sha256",
            holds=lambda model: not model.is_image or model.sha256 is None,
            field_path=".sha256",
            reason=ValidationReason.FORBIDDEN,
        ),
        Rule(
            cel="!self.uri.startsWith('oci://') || !has(self.format)",
            message="an oci:// model image holds a built engine: its labels say what it is, not format",
            holds=lambda model: not model.is_image or model.format is None,
            field_path=".format",
            reason=ValidationReason.FORBIDDEN,
        ),
        Rule(
            cel=f"!self.uri.matches({cel_string(DOT_DOT_SEGMENT)})",
            message="must not contain '..' path segments",
            holds=lambda model: not matches(DOT_DOT_SEGMENT, model.uri),
            field_path=".uri",
        ),
        Rule(
            cel="has(self.format) || self.uri.startsWith('oci://')"
            f" || self.uri.matches({cel_string(PLAN_SUFFIX)}) || self.uri.matches({cel_string(ONNX_SUFFIX)})",
            message="format is required when the uri does not end in .onnx, .plan or .engine",
            holds=lambda model: (
                model.format is not None
                or model.is_image
                or matches(PLAN_SUFFIX, model.uri)
                or matches(ONNX_SUFFIX, model.uri)
            ),
            field_path=".format",
            reason=ValidationReason.REQUIRED,
        ),
    )

    @property
    def is_image(self) -> bool:
        """A model image (oci://): an engine built and checked by `nimify build`, served as it is."""
        return self.uri.startswith("oci://")

    @property
    def resolved_format(self) -> ModelFormat:
        """The format as given, or as the uri's suffix says."""
        if self.format is not None:
            return self.format
        return ModelFormat.TENSORRT_PLAN if matches(PLAN_SUFFIX, self.uri) else ModelFormat.ONNX
