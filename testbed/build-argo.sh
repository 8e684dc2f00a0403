#!/usr/bin/env bash
# Builds the Argo Rollouts controller from the Go module proxy, once per version, for
# the side-by-side benchmark (bench/argo.py). Nothing of Argo's enters the repository:
# the wrapper module and the binary live in $POSTDEPLOY_CACHE outside it.
#
# github.com/argoproj/argo-rollouts carries a `replace (...)` block in its go.mod (the
# Kubernetes staging modules), which `go install pkg@version` refuses; a small module of
# our own requires the release and copies that block. v1.9.0 builds with Go 1.26;
# v1.10.x needs a newer Go than this machine has.
# Prints the binary's path on stdout.
set -euo pipefail

ARGO_VERSION=${ARGO_VERSION:-v1.9.0}
CACHE=${POSTDEPLOY_CACHE:-$HOME/.cache/postdeploy}
export GOFLAGS=${GOFLAGS:--buildvcs=false}
export CGO_ENABLED=0

say() { printf '[build-argo] %s\n' "$*" >&2; }

out="$CACHE/bin/argo-rollouts-$ARGO_VERSION"
if [ -x "$out/rollouts-controller" ]; then
  say "argo-rollouts $ARGO_VERSION cached"
  echo "$out/rollouts-controller"
  exit 0
fi
mod="$CACHE/src/argo-rollouts-$ARGO_VERSION"
mkdir -p "$mod" "$out"
if [ ! -f "$mod/go.sum" ]; then
  say "preparing module for github.com/argoproj/argo-rollouts $ARGO_VERSION"
  gomod=$(cd "$mod" && go mod download -json "github.com/argoproj/argo-rollouts@$ARGO_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  {
    echo "module postdeploy.local/argobuild"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')"
    echo
    echo "require github.com/argoproj/argo-rollouts $ARGO_VERSION"
    echo
    # the release's own replace block, copied as it is
    awk '/^replace \($/{on=1} on{print} on&&/^\)$/{on=0}' "$gomod"
    # single-line replaces, if any
    grep -E '^replace [^(]' "$gomod" || true
  } >"$mod/go.mod"
  cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import _ "github.com/argoproj/argo-rollouts/cmd/rollouts-controller"
GO
  (cd "$mod" && GOFLAGS=-mod=mod go mod tidy)
fi
say "building rollouts-controller $ARGO_VERSION (minutes on 2 cores)"
(cd "$mod" && GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$out/rollouts-controller" github.com/argoproj/argo-rollouts/cmd/rollouts-controller)
echo "$out/rollouts-controller"
