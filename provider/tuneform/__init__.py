"""tuneform: tuned models declared as code.

The package follows the way of the data: ``spec`` (YAML -> validated spec) -> ``datasets`` (streaming checks,
conversion, hashing) -> ``resources`` (Pulumi dynamic resources) -> ``backends`` (local | vertex) -> ``registry``
and ``serving``.
"""

__version__ = "0.1.0"
