"""Streaming dataset checks, OpenAI chat -> Gemini conversion, content hashing and token statistics.

The public API. :mod:`tuneform.datasets.check` is the pass over a file (and its decisions on edge cases);
:mod:`~tuneform.datasets.gemini`, :mod:`~tuneform.datasets.media` and :mod:`~tuneform.datasets.openai_chat` hold the
rules of one example, each with its Google source; :mod:`~tuneform.datasets.canonical` the canonical form and its fast
path; :mod:`~tuneform.datasets.tokens` how tokens are counted or estimated.
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
