"""pydantic models that mirror the CRDs; ``crds/*.yaml`` is generated from them.

``checks`` holds a check and its provider blocks, ``reviews`` the review, template
and status models, ``people`` sign-offs, report and cleanup blocks, ``measurements``
what a check's run yields (``Measurement``) and may know (``ReviewContext``), and
``crds`` turns them into CustomResourceDefinitions and holds the API's names.
"""
