"""The top-k recommendation contract (DESIGN.md section 4), shared by everything that answers it.

The teacher black box and the service's student endpoint both validate requests, map raw ids
and rank through this package, so a student can stand in for the teacher byte for byte.
"""
