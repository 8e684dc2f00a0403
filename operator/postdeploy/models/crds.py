"""Generates the CustomResourceDefinitions in ``crds/`` from the pydantic models.

``postdeploy crds crds/`` (``make crds``) rewrites them, and the built-in default
template beside them (``postdeploy.defaults.write``); a unit test fails when the
committed files differ. The module also holds the API's names (group, version,
plurals), the one definition every other module uses. pydantic emits JSON Schema 2020-12; Kubernetes
wants a structural OpenAPI v3 subset, so this module inlines ``$ref``, drops
``null`` branches, titles and defaults (defaults are applied after template
merging, so the API server must not fill them in), and rewrites numeric
exclusive bounds.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import pydantic
import yaml

from postdeploy.models import checks, people, reviews

__all__ = [
    "API_VERSION",
    "CLUSTER_TEMPLATES",
    "GROUP",
    "REVIEWS",
    "SIGNOFFS",
    "TEMPLATES",
    "VERSION",
    "all_crds",
    "openapi_schema",
    "write",
]

# The API's names: the one definition every client of the API server uses.
GROUP = "postdeploy.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
REVIEWS = "postdeploymentreviews"
TEMPLATES = "reviewtemplates"
CLUSTER_TEMPLATES = "clusterreviewtemplates"
SIGNOFFS = "reviewsignoffs"
_DROP = {"title", "default", "x-postdeploy-duration"}


def openapi_schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """A structural schema for one model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Any] = raw.pop("$defs", {})

    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return convert(merged)
        if "anyOf" in node:
            branches = [b for b in node["anyOf"] if b.get("type") != "null"]
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            if len(branches) == 1:
                return convert({**branches[0], **rest})
            return convert({**rest, "anyOf": branches})
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROP:
                continue
            if key == "properties":
                out[key] = {name: convert(sub) for name, sub in value.items()}
            elif key == "const":
                out["enum"] = [value]
            elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
                bound = "minimum" if key == "exclusiveMinimum" else "maximum"
                out[bound] = value
                out[key] = True
            else:
                out[key] = convert(value)
        if out.get("x-kubernetes-preserve-unknown-fields") or "properties" in out:
            # Kubernetes forbids additionalProperties beside properties; unknown fields
            # are pruned, and kubectl's strict field validation reports them.
            out.pop("additionalProperties", None)
        if out.get("additionalProperties") is True:
            out.pop("additionalProperties")
            out["x-kubernetes-preserve-unknown-fields"] = True
        if "enum" in out and "type" not in out:
            out["type"] = "string"
        return out

    schema = convert(raw)
    assert isinstance(schema, dict)
    return schema


def _crd(
    kind: str,
    plural: str,
    scope: str,
    spec_model: type[pydantic.BaseModel],
    *,
    short_names: list[str],
    status: bool,
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    properties: dict[str, Any] = {"spec": openapi_schema(spec_model)}
    if spec_model is reviews.PostDeploymentReviewSpec:
        _partial_provider_blocks(properties["spec"])
    if status:
        properties["status"] = openapi_schema(reviews.ReviewStatus)
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {
            "openAPIV3Schema": {
                "type": "object",
                "required": ["spec"],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"type": "object"},
                    **properties,
                },
            }
        },
    }
    if status:
        version["subresources"] = {"status": {}}
    if columns:
        version["additionalPrinterColumns"] = columns
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["postdeploy"],
            },
            "versions": [version],
        },
    }


def _partial_provider_blocks(spec: dict[str, Any]) -> None:
    """A review's provider block may hold only the fields it overrides in its template's
    check of the same provider (``step`` alone, say), so the API server requires none of
    them; the operator validates the merged check, and reports what is missing."""
    check = spec["properties"]["phases"]["items"]["properties"]["checks"]["items"]
    for field in checks.PROVIDER_FIELDS:
        check["properties"][field].pop("required", None)


def _column(name: str, path: str, kind: str = "string", priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": kind, "jsonPath": path}
    if priority:
        column["priority"] = priority
    return column


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD document."""
    review_columns = [
        _column("Target", ".status.target"),
        _column("Version", ".status.version"),
        _column("Phase", ".status.phase"),
        _column("Verdict", ".status.verdict"),
        _column("Message", ".status.message", priority=1),
        _column("Age", ".metadata.creationTimestamp", "date"),
    ]
    template_columns = [_column("Age", ".metadata.creationTimestamp", "date")]
    return {
        "postdeploymentreviews.yaml": _crd(
            "PostDeploymentReview", REVIEWS, "Namespaced",
            reviews.PostDeploymentReviewSpec, short_names=["pdr"], status=True,
            columns=review_columns,
        ),
        "reviewtemplates.yaml": _crd(
            "ReviewTemplate", TEMPLATES, "Namespaced", reviews.ReviewTemplateSpec,
            short_names=["pdrt"], status=False, columns=template_columns,
        ),
        "clusterreviewtemplates.yaml": _crd(
            "ClusterReviewTemplate", CLUSTER_TEMPLATES, "Cluster",
            reviews.ReviewTemplateSpec, short_names=["cpdrt"], status=False,
            columns=template_columns,
        ),
        "reviewsignoffs.yaml": _crd(
            "ReviewSignoff", SIGNOFFS, "Namespaced", people.ReviewSignoffSpec,
            short_names=["pdrsign"], status=False,
            columns=[
                _column("Review", ".spec.review"),
                _column("Role", ".spec.role"),
                _column("Signed-By", ".spec.signedBy.username"),
                _column("Signed-At", ".spec.signedAt"),
                _column("Age", ".metadata.creationTimestamp", "date"),
            ],
        ),
    }


def render(document: dict[str, Any]) -> str:
    header = "# Generated by `python -m postdeploy.models.crds crds/`; do not edit.\n"
    return header + yaml.safe_dump(document, sort_keys=False, width=100)


def write(directory: pathlib.Path) -> list[pathlib.Path]:
    """The CRDs (the built-in template they ship with is ``postdeploy.defaults.write``)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in all_crds().items():
        path = directory / name
        path.write_text(render(document))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "crds")):
        print(path)
