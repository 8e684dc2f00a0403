#!/usr/bin/env bash
# Builds the test bed's Kubernetes binaries from the Go module proxy, once per version.
#
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl come from
# k8s.io/kubernetes at $K8S_VERSION; etcd from go.etcd.io/etcd/server/v3; kwok (fake
# nodes that make pods Running/Ready) from sigs.k8s.io/kwok; helm from helm.sh/helm/v3.
# Binaries land in $POSTDEPLOY_CACHE/bin/<component>-<version>/ outside the repository;
# a binary that is already there is not rebuilt.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.5}
KWOK_VERSION=${KWOK_VERSION:-v0.7.0}
HELM_VERSION=${HELM_VERSION:-v3.19.0}
CACHE=${POSTDEPLOY_CACHE:-$HOME/.cache/postdeploy}
export GOFLAGS=${GOFLAGS:--buildvcs=false}
export CGO_ENABLED=0

say() { printf '[build] %s\n' "$*" >&2; }

staging_minor=${K8S_VERSION#v1.}   # 34.4
staging_version="v0.${staging_minor}"

build_kubernetes() {
  local out="$CACHE/bin/kubernetes-$K8S_VERSION"
  local wanted=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  local missing=()
  for b in "${wanted[@]}"; do [ -x "$out/$b" ] || missing+=("$b"); done
  [ ${#missing[@]} -eq 0 ] && { say "kubernetes $K8S_VERSION cached"; return; }
  local mod="$CACHE/src/kubernetes-$K8S_VERSION"
  mkdir -p "$mod" "$out"
  if [ ! -f "$mod/go.sum" ]; then
    say "preparing module for k8s.io/kubernetes $K8S_VERSION"
    local gomod
    gomod=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    {
      echo "module postdeploy.local/k8sbuild"
      echo
      echo "go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')"
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      echo "replace ("
      # every staging module the release's own go.mod points at ./staging
      grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$gomod" | awk -v v="$staging_version" '{print "\t" $1 " => " $1 " " v}'
      echo ")"
    } >"$mod/go.mod"
    cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
    (cd "$mod" && go mod tidy)
  fi
  for b in "${missing[@]}"; do
    say "building $b $K8S_VERSION"
    (cd "$mod" && go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" -o "$out/$b" "k8s.io/kubernetes/cmd/$b")
  done
}

build_with_install() { # name module/cmd version outdir
  local name=$1 pkg=$2 version=$3 out="$CACHE/bin/$1-$3"
  [ -x "$out/$name" ] && { say "$name $version cached"; return; }
  say "building $name $version"
  mkdir -p "$out"
  GOBIN="$out" go install -trimpath -ldflags "-s -w" "$pkg@$version"
}

# etcd's server module carries replace directives (../api, ../pkg, ...), so
# `go install go.etcd.io/etcd/server/v3@VERSION` is refused; build it from a small
# module of our own that requires it (its sibling modules resolve at the same version).
build_etcd() {
  local out="$CACHE/bin/etcd-$ETCD_VERSION"
  [ -x "$out/etcd" ] && { say "etcd $ETCD_VERSION cached"; return; }
  local mod="$CACHE/src/etcd-$ETCD_VERSION"
  mkdir -p "$mod" "$out"
  if [ ! -f "$mod/go.sum" ]; then
    say "preparing module for go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    {
      echo "module postdeploy.local/etcdbuild"
      echo
      echo "go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')"
      echo
      echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    } >"$mod/go.mod"
    cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
    (cd "$mod" && go mod tidy)
  fi
  say "building etcd $ETCD_VERSION"
  (cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3)
}

build_kubernetes
build_etcd
build_with_install kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION"
if [ "${BUILD_HELM:-1}" = 1 ]; then
  build_with_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
fi
say "done: $CACHE/bin"
