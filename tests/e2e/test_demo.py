"""``make demo`` on the session's test bed: what a newcomer sees, and the report it writes.

Runs ``testbed.demo.run`` (the demo without starting and stopping a test bed) against
the session's Kubernetes, Prometheus, Alertmanager and a copy of the ``shop`` database,
and reads what it printed. Covers:
- the live table shows every phase of the built-in template (and phases 4 and 5 the
  review adds), and the review ends Completed;
- the three manual checks are confirmed and the three sign-offs given through
  ``kubectl postdeploy`` by three identities the API server authenticated (alice, bob,
  carol), and the final review records them;
- cleanup removed the planted ``maintenance-mode`` ConfigMap and the Secret labelled
  temporary for the version, and the output says so;
- the final review's SLO table, the action items and the paths of the two reports;
- the HTML report opens in headless Chromium with no console errors and its four
  charts drawn: visible lines, the deployment marker, axes in human units.
"""

from __future__ import annotations

import io
import pathlib
import re
from collections.abc import Iterator
from typing import Any

import pytest

from testbed import demo
from tests.e2e import browsers
from tests.e2e.harness import ROOT, Kubectl
from tests.e2e.shops import ShopCopy, copy_of_shop

pytestmark = pytest.mark.e2e


@pytest.fixture
def demo_env(
    kube_cluster: dict[str, Any],
    observability: dict[str, Any],
    postgres_db: dict[str, Any],
    kubectl: Kubectl,
    crds: None,
) -> Iterator[dict[str, str]]:
    with copy_of_shop(postgres_db) as shop:  # the demo adds rows: keep them out of `shop`
        yield _env(kube_cluster, observability, shop)
    kubectl("-n", demo.NAMESPACE, "delete", "pdr", demo.REVIEW, "--ignore-not-found", "--wait=true")
    kubectl("delete", "clusterreviewtemplate", "postdeploy-default", "--ignore-not-found")


def _env(kube: dict[str, Any], observability: dict[str, Any], shop: ShopCopy) -> dict[str, str]:
    return {
        **kube["env"],
        **observability["env"],
        "POSTGRES_DSN": shop.read_only,
        "POSTGRES_ADMIN_DSN": shop.admin,
    }


@pytest.mark.timeout(1500)  # the demo takes 4-5 minutes, three times that on a loaded machine
def test_the_demo_shows_the_whole_checklist_and_writes_a_report(
    demo_env: dict[str, str], kubectl: Kubectl, default_template: dict[str, Any]
) -> None:
    out = io.StringIO()
    output = ROOT / "artifacts" / "demo-test"
    code = demo.run(demo_env, out=out, output=output)
    text = out.getvalue()
    (ROOT / "artifacts" / "demo-test.txt").write_text(text)
    assert code == 0, text[-4000:]

    rows = [line.split()[1] for line in text.splitlines() if re.match(r"^\s*\d+:\d\d\s", line)]
    template_phases = [p["name"] for p in default_template["spec"]["phases"]]
    assert template_phases == ["immediate", "extended", "business"]
    for phase in [*template_phases, "documentation", "cleanup", "AwaitingSignoff", "Completed"]:
        assert phase in rows, f"no row in phase {phase}: {sorted(set(rows))}"
    assert "kubectl apply -f -" in text and "name: immediate" in text  # the review, as applied

    for check, user in (
        ("support-tickets", "bob"),
        ("social-media", "carol"),
        ("feedback-channels", "alice"),
    ):
        assert re.search(rf"{user} \$ +kubectl postdeploy -n shop confirm {demo.REVIEW} {check} ", text)
        assert f"{check} confirmed by {user}" in text
    for user, role in demo.PEOPLE.items():
        assert re.search(rf"{user} \$ +kubectl postdeploy -n shop signoff {demo.REVIEW} --role {role} ", text)
        assert f"signed off as {role} by {user}" in text

    status = kubectl.get("shop", "pdr", demo.REVIEW)["status"]
    signers = {s["role"]: s["by"] for s in status["finalReview"]["signoffs"] if s["signed"]}
    assert signers == {role: user for user, role in demo.PEOPLE.items()}
    assert [p["state"] for p in status["phases"]] == ["Completed"] * 5

    assert re.search(r"deleted\s+ConfigMap/maintenance-mode", text), text
    assert re.search(r"deleted\s+Secret/deploy-token", text), text
    assert "temporary credentials revoked: 1" in text
    assert not kubectl("-n", "shop", "get", "configmap", "maintenance-mode", "--ignore-not-found").strip()

    assert re.search(r"^\s*SLO\s+VALUE\s+TARGET\s+MET", text, re.M), text[-3000:]
    for slo in ("deploymentTime", "downtime", "errorSpike", "rollbackRequired"):
        assert re.search(rf"^\s*{slo}\s", text, re.M), slo
    assert re.search(r"^\s*ROLE\s+SIGNED\s+BY", text, re.M)
    items = status["finalReview"].get("actionItems")
    assert re.search(r"^\s*PRIORITY\s+ACTION ITEM", text, re.M) or not items

    paths = re.findall(r"^REPORT: (.+)$", text, re.M)
    assert [p.rsplit(".", 1)[1] for p in paths] == ["md", "html"]
    markdown = pathlib.Path(paths[0]).read_text(encoding="utf-8")
    assert "### Deployment SLOs" in markdown and "alice" in markdown

    if browsers.chromium() is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium")
    page = browsers.open_page(pathlib.Path(paths[1]), output / "report.png")
    assert page.console == [], page.console
    assert page.dom.count('class="series"') == 4, page.dom.count('class="series"')
    ticks = re.findall(r'<text class="tick"[^>]*>([^<]+)</text>', page.dom)
    # Memory's unit follows its size (B to TiB); the other three are fixed.
    for units in (("%",), (" ms",), (" B", " KiB", " MiB", " GiB", " TiB"), (" req/s",)):
        assert any(t.endswith(units) for t in ticks), (units, ticks)
    captions = re.findall(r"<figcaption>(.*?)<br>", page.dom)
    assert len(captions) == 4 and all("mean before" in c for c in captions), captions
    assert not re.search(r"\de[+-]\d", " ".join(ticks + captions)), (ticks, captions)
    _, _, pixels = browsers.png_pixels(page.screenshot)
    blue = sum(1 for r, g, b in pixels if abs(r - 0x09) < 40 and abs(g - 0x69) < 40 and abs(b - 0xDA) < 40)
    red = sum(1 for r, g, b in pixels if abs(r - 0xCF) < 40 and abs(g - 0x22) < 50 and abs(b - 0x2E) < 50)
    assert blue > 300, f"chart lines hardly visible: {blue} blue pixels"
    assert red > 50, f"deployment markers hardly visible: {red} red pixels"
    # The deployment in the middle of each chart: as much after it as before it.
    for svg in re.findall(r'<svg class="chart".*?</svg>', page.dom):
        left, width = (
            float(v) for v in re.search(r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', svg).groups()
        )  # type: ignore[union-attr]
        deploy = float(re.search(r'class="deploy" x1="([\d.]+)"', svg).group(1))  # type: ignore[union-attr]
        assert 0.4 < (deploy - left) / width < 0.6, svg[:200]
