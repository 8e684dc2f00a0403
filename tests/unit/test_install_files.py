"""The install files carry the same CRDs as ``crds/``.

Covers: the Helm chart's ``crds/`` and the kustomize base's ``manifests/crds/`` hold
byte-identical copies of every generated CRD (refresh with
``python helm/render_manifests.py``) and no other CRD; the kustomize base lists every
CRD.
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
    expected = set(GENERATED)
    assert {p.name for p in CHART_CRDS.glob("*.yaml")} == expected
    assert {p.name for p in MANIFEST_CRDS.glob("*.yaml")} == expected


def test_kustomization_lists_every_crd() -> None:
    kustomization = yaml.safe_load((ROOT / "manifests" / "kustomization.yaml").read_text())
    listed = {r for r in kustomization["resources"] if r.startswith("crds/")}
    assert listed == {f"crds/{p.name}" for p in MANIFEST_CRDS.glob("*.yaml")}
    assert kustomization["namespace"] == "postdeploy"
