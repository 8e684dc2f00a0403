"""The install files carry the same CRDs as ``crds/``.

Covers: the Helm chart's ``crds/`` and the kustomize base's ``manifests/crds/`` hold
byte-identical copies of every generated CRD (refresh with
``python helm/render_manifests.py``); both ship kopf's peering CRDs, which kopf can
write to (status kept as written) in both scopes; the kustomize base lists every CRD.
The rendering of the chart itself is covered by tests/e2e/test_install.py.
"""

from __future__ import annotations

import pathlib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART_CRDS = ROOT / "helm" / "postdeploy" / "crds"
MANIFEST_CRDS = ROOT / "manifests" / "crds"
# crds/ also holds the built-in ClusterReviewTemplate, which is not a CRD.
GENERATED = sorted(
    p.name for p in (ROOT / "crds").glob("*.yaml") if "kind: CustomResourceDefinition" in p.read_text()
)
FIX = "run `python helm/render_manifests.py`"


@pytest.mark.parametrize("copies", [CHART_CRDS, MANIFEST_CRDS], ids=["chart", "manifests"])
@pytest.mark.parametrize("name", GENERATED)
def test_generated_crds_are_copied_verbatim(copies: pathlib.Path, name: str) -> None:
    copy = copies / name
    assert copy.exists(), f"{copy.relative_to(ROOT)} is missing: {FIX}"
    assert copy.read_text() == (ROOT / "crds" / name).read_text(), f"{copy.relative_to(ROOT)} is stale: {FIX}"


def test_no_other_crds_are_shipped() -> None:
    expected = {*GENERATED, "kopf-peerings.yaml"}
    assert {p.name for p in CHART_CRDS.glob("*.yaml")} == expected
    assert {p.name for p in MANIFEST_CRDS.glob("*.yaml")} == expected


def test_peering_crds_let_kopf_keep_its_status() -> None:
    text = (CHART_CRDS / "kopf-peerings.yaml").read_text()
    assert (MANIFEST_CRDS / "kopf-peerings.yaml").read_text() == text
    documents = {d["metadata"]["name"]: d for d in yaml.safe_load_all(text)}
    assert set(documents) == {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    scopes = {name: d["spec"]["scope"] for name, d in documents.items()}
    assert scopes == {"clusterkopfpeerings.kopf.dev": "Cluster", "kopfpeerings.kopf.dev": "Namespaced"}
    for document in documents.values():
        (version,) = document["spec"]["versions"]
        assert version["name"] == "v1" and version["served"] and version["storage"]
        # kopf patches the object itself, not a status subresource.
        assert "subresources" not in version
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status["x-kubernetes-preserve-unknown-fields"] is True


def test_kustomization_lists_every_crd() -> None:
    kustomization = yaml.safe_load((ROOT / "manifests" / "kustomization.yaml").read_text())
    listed = {r for r in kustomization["resources"] if r.startswith("crds/")}
    assert listed == {f"crds/{p.name}" for p in MANIFEST_CRDS.glob("*.yaml")}
    assert kustomization["namespace"] == "postdeploy"
