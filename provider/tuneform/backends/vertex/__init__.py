"""The Vertex AI target (see ``backend.VertexBackend``).

Modules: ``_api`` (hosts per location, retries, labels), ``requests`` (the TuningJob a request becomes, a pure
function), ``jobs`` (what a job read back means: version, outcome, failure), ``continuation`` (continuous tuning's
source and its checks), ``storage`` (datasets and job markers in Cloud Storage), ``registry`` (tuned versions and
their endpoints), ``backend`` (the ``Backend`` protocol's methods). Nothing here imports Google Cloud at module level.
"""

from tuneform.backends.vertex._api import (
    MANAGED_BY_LABEL,
    NAME_LABEL,
    SPEC_HASH_LABEL,
    TERMINAL_STATES,
    VERSION_LABEL,
    Hosts,
    label_value,
)
from tuneform.backends.vertex.backend import VertexBackend
from tuneform.backends.vertex.continuation import CONTINUOUS_TUNING_SINCE
from tuneform.backends.vertex.requests import ADAPTER_SIZES, build_tuning_job, vertex_base_model

__all__ = [
    "ADAPTER_SIZES",
    "CONTINUOUS_TUNING_SINCE",
    "MANAGED_BY_LABEL",
    "NAME_LABEL",
    "SPEC_HASH_LABEL",
    "TERMINAL_STATES",
    "VERSION_LABEL",
    "Hosts",
    "VertexBackend",
    "build_tuning_job",
    "label_value",
    "vertex_base_model",
]
