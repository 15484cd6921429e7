"""Streaming dataset checks, OpenAI chat -> Gemini conversion, content hashing and token statistics.

The public API; see :mod:`tuneform.datasets.check` for the rules and :mod:`tuneform.datasets.tokens` for how tokens
are counted or estimated.
"""

from tuneform.datasets.check import (
    MODALITIES,
    DatasetLimits,
    DatasetProblem,
    check_dataset,
    iter_gemini_examples,
)
from tuneform.datasets.summary import DatasetSummary, read_summary, write_summary
from tuneform.datasets.tokens import (
    ESTIMATE_METHOD,
    TokenCounter,
    estimate_example_tokens,
    estimate_text_tokens,
    tokenizer_counter,
)

__all__ = [
    "ESTIMATE_METHOD",
    "MODALITIES",
    "DatasetLimits",
    "DatasetProblem",
    "DatasetSummary",
    "TokenCounter",
    "check_dataset",
    "estimate_example_tokens",
    "estimate_text_tokens",
    "iter_gemini_examples",
    "read_summary",
    "tokenizer_counter",
    "write_summary",
]
