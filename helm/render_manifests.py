"""Keep the install files in step with their sources.

- ``helm/postdeploy/crds/``: copies of the generated CRDs in ``crds/`` (Helm installs
  only what is inside the chart); ``helm/postdeploy/files/``: copies of the built-in
  ClusterReviewTemplate(s), also in ``crds/``.
- ``manifests/``: the kustomize base, which is the chart rendered with its defaults
  (release ``postdeploy`` in namespace ``postdeploy``) without Helm's own labels, one
  file per chart template, plus the CRDs and the namespace (Pod Security ``restricted``);
  ``manifests/templates/``: the built-in templates, a second kustomization applied once
  the CRDs exist (one ``kubectl apply`` cannot create a CRD and its objects).

Only files this script writes are ever rewritten or removed: rendered files carry the
header below, copies are CRDs or ClusterReviewTemplates in the directories above.

Usage::

    python helm/render_manifests.py           # rewrite what is stale
    python helm/render_manifests.py --check   # list what is stale, exit 1 if any

The chart is rendered with the ``helm`` binary from ``$HELM``, else the one
``testbed/build-binaries.sh`` builds, else ``helm`` on ``PATH``. The e2e install tests
run ``--check``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "postdeploy"
MANIFESTS = ROOT / "manifests"
RELEASE = NAMESPACE = "postdeploy"
KUBE_VERSION = "v1.34.4"
HELM_VERSION = "v3.19.0"
# The chart template that installs the built-in ClusterReviewTemplate(s).
BUILTIN_TEMPLATES = "default-template.yaml"
# Labels that describe Helm's bookkeeping, not the install.
HELM_ONLY_LABELS = re.compile(r"^\s*(helm\.sh/chart|app\.kubernetes\.io/managed-by):.*\n", re.MULTILINE)
HEADER = "# Rendered from helm/postdeploy by helm/render_manifests.py; do not edit.\n"

NAMESPACE_YAML = f"""{HEADER}# The operator's namespace: its pods must pass the restricted Pod Security level.
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/warn: restricted
    pod-security.kubernetes.io/audit: restricted
"""


def helm_binary() -> str:
    explicit = os.environ.get("HELM")
    if explicit:
        return explicit
    cache = pathlib.Path(os.environ.get("POSTDEPLOY_CACHE", pathlib.Path.home() / ".cache" / "postdeploy"))
    built = cache / "bin" / f"helm-{HELM_VERSION}" / "helm"
    if built.exists():
        return str(built)
    found = shutil.which("helm")
    if found is None:
        raise SystemExit("no helm: set $HELM or run testbed/build-binaries.sh")
    return found


def render_chart() -> dict[str, str]:
    """The default install, as text per template file name (``rbac.yaml`` ...)."""
    out = subprocess.run(
        [
            helm_binary(),
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            KUBE_VERSION,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    files: dict[str, list[str]] = {}
    for document in re.split(r"^---\n", out, flags=re.MULTILINE):
        match = re.match(r"# Source: postdeploy/templates/(\S+)\n", document)
        if match is None:
            continue
        body = HELM_ONLY_LABELS.sub("", document[match.end() :])
        files.setdefault(match.group(1), []).append(body.rstrip("\n") + "\n")
    return {name: HEADER + "---\n".join(documents) for name, documents in files.items()}


def kustomization(resources: list[str], usage: str, namespace: str | None = NAMESPACE) -> str:
    lines = [
        HEADER.rstrip("\n"),
        f"# {usage}",
        "apiVersion: kustomize.config.k8s.io/v1beta1",
        "kind: Kustomization",
        *([f"namespace: {namespace}"] if namespace else []),
        "resources:",
        *[f"  - {resource}" for resource in resources],
    ]
    return "\n".join(lines) + "\n"


def is_crd(path: pathlib.Path) -> bool:
    return "kind: CustomResourceDefinition" in path.read_text()


def wanted() -> dict[pathlib.Path, str]:
    """Every file this script owns, with the text it should have."""
    files: dict[pathlib.Path, str] = {}
    # crds/ holds the generated CRDs and the built-in ClusterReviewTemplate(s).
    sources = sorted((ROOT / "crds").glob("*.yaml"))
    generated = [p for p in sources if is_crd(p)]
    builtins = [p for p in sources if not is_crd(p)]
    for source in generated:
        files[CHART / "crds" / source.name] = source.read_text()
    crds = generated
    for source in crds:
        files[MANIFESTS / "crds" / source.name] = source.read_text()
    # The built-in templates: the chart installs them from files/ (after its CRDs); the
    # kustomize base keeps them in templates/, applied once the CRDs are established.
    for source in builtins:
        files[CHART / "files" / source.name] = source.read_text()
        files[MANIFESTS / "templates" / source.name] = source.read_text()
    files[MANIFESTS / "templates" / "kustomization.yaml"] = kustomization(
        [b.name for b in builtins],
        "kubectl apply -k manifests/templates/   (after manifests/: needs the CRDs)",
        namespace=None,
    )
    files[MANIFESTS / "namespace.yaml"] = NAMESPACE_YAML
    templates = render_chart()
    templates.pop(BUILTIN_TEMPLATES, None)
    for name, text in templates.items():
        files[MANIFESTS / name] = text
    resources = ["namespace.yaml", *[f"crds/{c.name}" for c in crds], *sorted(templates)]
    files[MANIFESTS / "kustomization.yaml"] = kustomization(resources, "kubectl apply -k manifests/")
    return files


def owned(path: pathlib.Path) -> bool:
    """Whether this script wrote PATH (so may remove it): a copy it makes, or a rendered file.

    Anything else under manifests/ (say, manifests/people/) belongs to someone else.
    """
    if path.parent in (CHART / "crds", MANIFESTS / "crds"):
        return is_crd(path)
    if path.parent in (CHART / "files", MANIFESTS / "templates"):
        return path.name == "kustomization.yaml" or "kind: ClusterReviewTemplate" in path.read_text()
    return path.parent == MANIFESTS and path.read_text().startswith(HEADER)


def stale_files() -> list[pathlib.Path]:
    """Files that differ from what they should be, and files this script no longer writes."""
    files = wanted()
    stale = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    candidates = [
        *MANIFESTS.glob("*.yaml"),
        *(MANIFESTS / "crds").glob("*.yaml"),
        *(MANIFESTS / "templates").glob("*.yaml"),
        *(CHART / "crds").glob("*.yaml"),
        *(CHART / "files").glob("*.yaml"),
    ]
    extra = [p for p in candidates if p not in files and owned(p)]
    return sorted(stale + extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="report stale files, change nothing")
    args = parser.parse_args(argv)
    stale = stale_files()
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)}")
        return 1 if stale else 0
    files = wanted()
    for path in stale:
        if path in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[path])
        else:
            path.unlink()
        print(f"wrote: {path.relative_to(ROOT)}" if path in files else f"removed: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
