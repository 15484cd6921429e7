"""``Dataset``: a checked, converted training or validation file stored content-addressed on the target.

The program has already validated and converted the file (``tuneform.datasets``); this resource only puts the
converted bytes where the target reads them (the local store, or ``gs://<bucket>/datasets/<sha256>.jsonl``). A
changed file has a new hash, hence a new object: what an earlier version was tuned on is never overwritten.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from tuneform.resources._provider import (
    BackendSettings,
    build_backend,
    diff_inputs,
    progress_printer,
    unwrap_pickler_patch,
    whole_numbers,
)

_REPLACE_ON = ("sha256", "split", "model", "uploadFormat")
_UPDATE_ON = ("source", "format")


class DatasetProvider(ResourceProvider):
    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._store(props)
        return CreateResult(id_=f"{props['model']}/{props['split']}/{props['sha256'][:16]}", outs=outs)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs={**olds, **news, "uri": olds.get("uri") or self._store(news)["uri"]})

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return diff_inputs(olds, news, replace_on=_REPLACE_ON, update_on=_UPDATE_ON)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        from tuneform.backends.base import DatasetArtifact

        if props.get("source", "").startswith("gs://"):
            return ReadResult(id_=id_, outs=props)
        artifact = DatasetArtifact(props["sha256"], props["uri"], props["examples"], props["tokens"])
        if not build_backend(self.settings).dataset_present(artifact):
            # A blank id tells the engine the object is gone; the next `pulumi up` stores it again.
            return ReadResult(id_="", outs={})
        return ReadResult(id_=id_, outs=props)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        # Stored datasets are history: a model version records which bytes it was tuned on, so they outlive the
        # resource. The local registry's retention collects objects no version references.
        return None

    def _store(self, props: dict[str, Any]) -> dict[str, Any]:
        props = whole_numbers(props, ("examples", "tokens"))
        if props["source"].startswith("gs://"):
            return {**props, "uri": props["source"]}
        emit = progress_printer(f"{props['model']}/{props['split']}")
        emit(f"storing dataset {props['source']} ({props['examples']} examples, sha256 {props['sha256'][:12]})")
        artifact = build_backend(self.settings).store_dataset(
            props["convertedPath"],
            props["sha256"],
            props["examples"],
            props["tokens"],
            props.get("uploadFormat") or "gemini",
        )
        return {**props, "uri": artifact.uri}


class Dataset(Resource, module="tuneform", name="Dataset"):
    """A training or validation dataset of one tuned model."""

    uri: pulumi.Output[str]
    sha256: pulumi.Output[str]
    examples: pulumi.Output[int]
    tokens: pulumi.Output[int]

    def __init__(
        self,
        resource_name: str,
        settings: BackendSettings,
        *,
        model: str,
        split: str,
        source: str,
        format: str,
        sha256: str,
        examples: int,
        tokens: int,
        converted_path: str,
        upload_format: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            # None = the Gemini form, so that datasets stored before this input existed are not replaced.
            "uploadFormat": upload_format,
            "model": model,
            "split": split,
            "source": source,
            "format": format,
            "sha256": sha256,
            "examples": examples,
            "tokens": tokens,
            "convertedPath": converted_path,
            "uri": None,
        }
        unwrap_pickler_patch()
        super().__init__(DatasetProvider(settings), resource_name, props, opts)
