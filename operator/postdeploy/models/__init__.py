"""pydantic models that mirror the CRDs; ``crds/*.yaml`` is generated from them.

``checks`` holds a check and its provider blocks, ``reviews`` the review, template
and status models, ``crds`` turns them into CustomResourceDefinitions.
"""
