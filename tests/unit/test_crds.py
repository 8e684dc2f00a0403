"""The committed CRDs are exactly what the models generate, and are structural.

Covers: crds/*.yaml equal the generated text (regenerate with
``python -m postdeploy crds crds/``); no $ref/anyOf/default survive; printer columns
and short name; the CEL rules are present.
"""

from __future__ import annotations

import json
import pathlib

from postdeploy.models import crds

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_committed_crds_match_the_models() -> None:
    for name, document in crds.all_crds().items():
        committed = (ROOT / "crds" / name).read_text()
        assert committed == crds.render(document), (
            f"crds/{name} is stale: run `python -m postdeploy crds crds/`"
        )


def test_schemas_are_structural() -> None:
    for document in crds.all_crds().values():
        text = json.dumps(document)
        for forbidden in ('"$ref"', '"anyOf"', '"default"', '"title"', '"$defs"'):
            assert forbidden not in text


def test_review_crd_surface() -> None:
    review = crds.all_crds()["postdeploymentreviews.yaml"]
    names = review["spec"]["names"]
    assert names["shortNames"] == ["pdr"]
    version = review["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:4] == ["Target", "Version", "Phase", "Verdict"] and "Age" in columns
    check = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["phases"]["items"][
        "properties"]["checks"]["items"]
    rules = [r["rule"] for r in check["x-kubernetes-validations"]]
    assert any("size() <= 1" in rule for rule in rules)
