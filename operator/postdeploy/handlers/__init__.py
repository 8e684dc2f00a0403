"""Thin kopf handlers: wiring the engine and the actions to the API server.

Importing this package registers every handler with kopf.
"""

from postdeploy.handlers import admissions, lifecycle, reviews, signoffs, zerotouch

__all__ = ["admissions", "lifecycle", "reviews", "signoffs", "zerotouch"]
