"""The built-in default template: the checklist's phases 1-3 as a ClusterReviewTemplate.

The source is ``checklist.yaml`` beside this module (package data). It ships with the
CRDs as ``crds/postdeploy-default.yaml``, written by ``python -m postdeploy crds crds/``
(``write``) as the same text under a generated-file header; a
unit test keeps the two in sync. The operator uses the ClusterReviewTemplate named by
``Settings.default_template`` ("postdeploy-default") for reviews without a
``templateRef`` (``postdeploy.engine.ticks``); this module is how code and tests read
the shipped one.
"""

from __future__ import annotations

import functools
import importlib.resources
import pathlib
from typing import Any

import yaml

from postdeploy.models import reviews

__all__ = ["FILE_NAME", "NAME", "manifest", "render", "source", "spec", "write"]

NAME = "postdeploy-default"
FILE_NAME = "postdeploy-default.yaml"
_HEADER = (
    "# Generated from operator/postdeploy/defaults/checklist.yaml by "
    "`python -m postdeploy crds crds/`; do not edit.\n"
)


@functools.cache
def source() -> str:
    """The text of ``checklist.yaml``."""
    return importlib.resources.files(__package__).joinpath("checklist.yaml").read_text()


def manifest() -> dict[str, Any]:
    """The ClusterReviewTemplate as a Kubernetes object (a fresh copy each call)."""
    document: dict[str, Any] = yaml.safe_load(source())
    return document


def spec() -> reviews.ReviewTemplateSpec:
    """The template's spec, validated by the model the CRD is generated from."""
    return reviews.ReviewTemplateSpec.model_validate(manifest()["spec"])


def render() -> str:
    """``crds/postdeploy-default.yaml``: the source under a generated-file header."""
    return _HEADER + source()


def write(directory: pathlib.Path) -> pathlib.Path:
    """Write ``crds/postdeploy-default.yaml`` into ``directory``; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE_NAME
    path.write_text(render())
    return path
