"""Files in Gemini examples: the part kinds, MIME types, files per example and URIs Vertex AI documents for tuning.

Every rule names its source (``catalogue/sources.yaml``); where Google's pages are silent, tuneform keeps the stricter
rule and says so here and in ``docs/spec.md``:

- **Part kinds** (V-prep): the tuning format's ``Part`` is "only one of" ``text`` or ``fileData {mimeType,
  fileUri}``. ``inlineData`` is not in it, so it is refused (the pages neither allow nor forbid it by name: the
  stricter reading).
- **MIME types** (V-model-pages: the Gemini 3.5 Flash page lists what the model takes per modality; the tuning pages,
  V-media, point to those lists): exactly one of :data:`MIME_TYPES`, written as listed (lower case, no parameters:
  ``image/jpeg; q=1`` is refused with the fix). The current tunable Gemini models share one list; a model that takes
  fewer modalities (``modalities`` in the catalogue) refuses the rest by modality.
- **Files per example** (V-media): "Maximum images per example: 30", "Maximum PDF files per example: 4", one audio
  file, one video. The document page counts PDF files and says nothing of ``text/plain``: both count toward the 4.
- **Where files go**: the pages show files in user turns only and say nothing of files in model turns; tuning teaches
  the model turns and Gemini answers in text, so a file in a model turn is refused.
- **URIs** (V-media): a ``fileUri`` "can be the URI for a file in a Cloud Storage bucket, or it can be a publicly
  available HTTP or HTTPS URL": ``gs://``, ``https://`` and ``http://`` with a bucket or host. Whether a URL is
  public, and the per-file sizes (20 MB images and PDFs, 100 MB audio and video), cannot be checked without fetching
  the file, which the check does not do.
"""

from __future__ import annotations

import re
from typing import Any

from tuneform.datasets._locate import PathKey
from tuneform.datasets.rules import Context, Finding, describe

__all__ = ["FILES_PER_EXAMPLE", "MIME_TYPES", "check_file_count", "check_mime", "check_uri", "count_file"]

MIME_TYPES: dict[str, tuple[str, ...]] = {
    "image": ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"),
    "document": ("application/pdf", "text/plain"),
    "audio": (
        "audio/x-aac",
        "audio/flac",
        "audio/mp3",
        "audio/m4a",
        "audio/mpeg",
        "audio/mpga",
        "audio/mp4",
        "audio/opus",
        "audio/pcm",
        "audio/wav",
        "audio/webm",
    ),
    "video": (
        "video/x-flv",
        "video/quicktime",
        "video/mpeg",
        "video/mpegs",
        "video/mpg",
        "video/mp4",
        "video/webm",
        "video/wmv",
        "video/3gpp",
    ),
}
"""The MIME types a Gemini tuning example may carry, per modality (V-model-pages)."""

FILES_PER_EXAMPLE = {"image": 30, "document": 4, "audio": 1, "video": 1}
"""The most files of each modality one example may carry (V-media)."""

_MODALITY_OF = {mime: modality for modality, types in MIME_TYPES.items() for mime in types}
_MAJOR_TO_MODALITY = {
    "image": "image",
    "audio": "audio",
    "video": "video",
    "application": "document",
    "text": "document",
}
_NOUNS = {
    "image": ("image", "images"),
    "document": ("document", "documents (PDF and plain-text files)"),
    "audio": ("audio file", "audio files"),
    "video": ("video", "videos"),
}
_URI = re.compile(r"(gs|https?)://[^/\s]+(/\S*)?")


def check_mime(mime: Any, path: tuple[PathKey, ...], errs: list[Finding], ctx: Context) -> str | None:
    """Check a ``mimeType`` against the documented list and the base model's modalities; returns its modality."""
    modality = _MODALITY_OF.get(mime) if type(mime) is str else None
    if modality is None:
        errs.append(Finding(path, _unknown_mime(mime), False))
        return None
    if modality not in ctx.allowed:
        accepted = ", ".join(sorted(ctx.allowed))
        errs.append(
            Finding(
                path,
                f"expected a file type the base model accepts ({accepted}), got {describe(mime)} ({modality}). "
                f"Choose a base model that accepts {modality} input, or remove this part.",
                False,
            )
        )
        return None
    ctx.seen.add(modality)
    return modality


def _unknown_mime(mime: Any) -> str:
    if not isinstance(mime, str):
        return f'expected a MIME type such as "image/jpeg", got {describe(mime)}. Write e.g. "mimeType": "image/jpeg".'
    plain = mime.split(";", 1)[0].strip().lower()
    if plain in _MODALITY_OF:
        return (
            f'expected "{plain}", got {describe(mime)}: a mimeType is written as documented, in lower case and '
            f'without parameters. Write "mimeType": "{plain}".'
        )
    modality = _MAJOR_TO_MODALITY.get(plain.partition("/")[0])
    if modality is not None:
        listed = ", ".join(MIME_TYPES[modality])
        return (
            f"expected one of the {modality} types Gemini tuning takes ({listed}), got {describe(mime)}. "
            "Convert the file to one of them and write its type."
        )
    return (
        "expected the MIME type of an image, document, audio file or video that Gemini tuning takes (e.g. "
        f'"image/jpeg", "application/pdf", "audio/mpeg", "video/mp4"), got {describe(mime)}.'
    )


def check_uri(uri: Any, path: tuple[PathKey, ...], errs: list[Finding]) -> None:
    """Check a ``fileUri``: a Cloud Storage object or an http(s) URL (V-media)."""
    if isinstance(uri, str) and _URI.fullmatch(uri):
        return
    fix = "Upload the file to Cloud Storage and write its gs://bucket/path URI, or give a public http(s) URL."
    errs.append(Finding(path, f"expected a gs://, https:// or http:// URI, got {describe(uri)}. {fix}", False))


def check_file_count(ctx: Context, errs: list[Finding]) -> None:
    """After an example's parts: refuse more files of one modality than :data:`FILES_PER_EXAMPLE` allows (V-media).

    ``ctx.files`` maps each modality to the example's count of it and the path of the first file over the limit.
    """
    for modality, (count, first_over) in ctx.files.items():
        limit = FILES_PER_EXAMPLE[modality]
        if count > limit:
            singular, plural = _NOUNS[modality]
            most = f"at most {limit} {plural}" if limit > 1 else f"at most one {singular}"
            fix = f"Remove {count - limit}, or split the example." if limit > 1 else "Give each its own example."
            message = f"expected {most} per example (Vertex AI's tuning pages), got {count}. {fix}"
            errs.append(Finding(first_over, message, False))


def count_file(ctx: Context, modality: str, path: tuple[PathKey, ...]) -> None:
    """Count one file of ``modality`` in the current example, remembering where the first one over the limit is."""
    count, first_over = ctx.files.get(modality, (0, path))
    count += 1
    if count == FILES_PER_EXAMPLE[modality] + 1:
        first_over = path
    ctx.files[modality] = (count, first_over)
