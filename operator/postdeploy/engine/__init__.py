"""The review engine: one tick of a review, from its spec and status to the next status.

``settings`` holds operator-wide configuration, ``registry`` picks and calls the
provider (or act) of a check, ``ticks`` runs a review's due checks and builds its status.
"""
