"""The Pulumi program: every spec under ``tuning_specs/`` becomes one ``TunedModel`` component with its children.

Stack config (``stacks/Pulumi.<stack>.yaml``, namespace ``tuneform``) picks the target and its settings. Nothing is
declared until every spec and dataset has passed its checks; a user's mistake ends the run with the problems listed
and no Python traceback.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pulumi

from tuneform import catalogue
from tuneform.backends.base import api_endpoint_settings
from tuneform.backends.local import endpoint_ports
from tuneform.prepare import PreparedModel, prepare
from tuneform.resources._provider import BackendSettings
from tuneform.resources.dataset import Dataset
from tuneform.resources.endpoint import Endpoint
from tuneform.resources.model_version import ModelVersion
from tuneform.resources.tuning_job import TuningJob
from tuneform.serving.config import DEFAULT_PORT
from tuneform.spec.stack import read_stack, stack_problems, training_prices


class TunedModel(pulumi.ComponentResource):
    """One tuned model: its datasets, its tuning job, the version that job yields, and its endpoint."""

    def __init__(
        self,
        prepared: PreparedModel,
        settings: BackendSettings,
        *,
        port: int | None,
        max_training_cost: float | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        spec = prepared.spec
        super().__init__("tuneform:index:TunedModel", spec.name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        info = catalogue.get_model(spec.base_model)
        # Vertex's open-model tuning reads chat messages with role `assistant`, not Gemini contents (V-oss).
        upload_format = "messages" if spec.target == "vertex" and info is not None and info.family == "open" else None

        def dataset(split: str) -> Dataset | None:
            data = prepared.train if split == "train" else prepared.validation
            if data is None:
                return None
            return Dataset(
                f"{spec.name}-{split}",
                settings,
                model=spec.name,
                split=split,
                source=data.source,
                format=spec.dataset.format,
                sha256=data.sha256,
                examples=data.examples,
                tokens=data.tokens,
                converted_path=data.converted_path,
                upload_format=upload_format,
                opts=child,
            )

        train = dataset("train")
        validation = dataset("validation")
        assert train is not None
        job = TuningJob(
            f"{spec.name}-tuning",
            settings,
            name=spec.name,
            target=spec.target,
            spec_hash=prepared.spec_hash,
            weights_hash=prepared.weights_hash,
            base_model=spec.base_model,
            mode=spec.mode,
            adapter_size=spec.adapter_size,
            hyperparameters=_hyperparameters(spec, prepared),
            lora=None if spec.lora is None else spec.training_inputs()["lora"],
            train_sha256=prepared.train.sha256,
            train_uri=train.uri,
            train_examples=prepared.train.examples,
            train_tokens=prepared.train.tokens,
            validation_sha256=prepared.validation.sha256 if prepared.validation else None,
            validation_uri=validation.uri if validation else None,
            validation_examples=prepared.validation.examples if prepared.validation else 0,
            description=spec.description,
            labels=spec.labels,
            adopt=spec.adopt,
            continue_from=spec.continue_from,
            intermediate_checkpoints=spec.intermediate_checkpoints or None,
            test_sha256=prepared.test.sha256 if prepared.test else None,
            test_uri=prepared.test.converted_path if prepared.test else None,
            test_examples=prepared.test.examples if prepared.test else None,
            generation=spec.endpoint.generation.to_json() if spec.endpoint.generation else None,
            estimated_training_tokens=prepared.training_tokens,
            token_method=prepared.train.token_method,
            estimated_cost=prepared.estimated_cost,
            max_training_cost=max_training_cost,
            region=settings.region or None,
            # The user's own gs:// objects: their content is not hashed here, so their names are what identify it.
            remote_data=[u for u in (spec.dataset.train, spec.dataset.validation) if u and u.startswith("gs://")]
            or None,
            epochs_assumed=prepared.epochs_assumed or None,
            opts=child,
        )
        version = ModelVersion(
            f"{spec.name}-version",
            settings,
            model=spec.name,
            job_id=job.jobId,
            model_name=job.modelName,
            version=job.version,
            metrics=job.metrics,
            retain=spec.retain,
            opts=child,
        )
        outputs: dict[str, Any] = {
            "baseModel": spec.base_model,
            "mode": spec.mode,
            "model": version.modelName,
            "version": version.version,
            "metrics": version.metrics,
            "trainingTokens": prepared.training_tokens,
            "estimatedCost": prepared.estimated_cost,
            "reused": job.reused,
        }
        if spec.endpoint.deploy:
            traffic = job.version.apply(lambda latest: resolve_traffic(spec.endpoint.traffic, latest))
            serving_version, version_metrics = _registry_view(settings, spec.name)
            endpoint = Endpoint(
                f"{spec.name}-endpoint",
                settings,
                name=spec.name,
                model_name=spec.name,
                traffic=traffic,
                versions=_served_versions(spec.name, spec.target, traffic, job),
                port=port,
                promote=spec.endpoint.promote,
                candidate_version=job.version,
                candidate_metrics=job.metrics,
                serving_version=serving_version,
                version_metrics=version_metrics,
                # Destroyed before the version: a registry refuses to delete a version an endpoint still serves
                # (`retain: false`), and Pulumi deletes resources with no dependency between them in parallel.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[version]),
            )
            outputs.update(endpoint=endpoint.url, apiKey=endpoint.apiKey, traffic=endpoint.servedTraffic)
            if settings.target == "vertex":
                # project, location and model for google-genai in Vertex mode: tuned 3.x models are served from the
                # `us`/`eu` multi-region endpoint, not from the tuning region.
                outputs["genai"] = endpoint.client
            if spec.endpoint.promote:
                outputs["promotion"] = endpoint.promotion
        self.outputs = outputs
        self.register_outputs(outputs)


def _served_versions(name: str, target: str, traffic: pulumi.Output[dict[str, int]], job: TuningJob) -> Any:
    """Version -> what serves it: ``name@N`` in the local registry; on Vertex, for the version this run tuned (or
    adopted), the endpoint its job reported, so the endpoint step needs no job listing (which may lag)."""
    if target != "vertex":
        return traffic.apply(lambda split: {v: f"{name}@{v}" for v in split})
    return pulumi.Output.all(traffic, job.version, job.tunedEndpoint).apply(
        lambda args: {v: (args[2] if args[2] and int(v) == args[1] else f"{name}@{v}") for v in args[0]}
    )


def _registry_view(settings: BackendSettings, name: str) -> tuple[int | None, dict[str, dict[str, float]] | None]:
    """What the local registry says before the update: the version serving most traffic, and every version's metrics.

    Read at preview time too, so policies can judge a traffic shift before anything runs. Vertex keeps no local
    registry: there the endpoint's own state carries the metrics it has seen.
    """
    if settings.target != "local":
        return None, None
    from tuneform.registry import Registry, registry_root

    registry = Registry(registry_root(settings.repo_root))
    versions = registry.versions(name)
    serving = registry.serving(name)
    metrics = {str(version.number): dict(version.metrics) for version in versions}
    return (max(serving) if serving else None), (metrics or None)


def resolve_traffic(traffic: dict[str, int] | None, latest: int | None) -> dict[str, int]:
    """Map the spec's version labels (``latest``, ``v3`` or ``3``) to version numbers."""
    if latest is None:
        return {}
    if not traffic:
        return {str(latest): 100}
    resolved: dict[str, int] = {}
    for label, percent in traffic.items():
        number = latest if label == "latest" else int(label.lstrip("v"))
        resolved[str(number)] = resolved.get(str(number), 0) + int(percent)
    return resolved


def _hyperparameters(spec: Any, prepared: PreparedModel) -> dict[str, Any]:
    # Vertex chooses epochs for Gemini when the spec leaves them unset, so only an explicit value is sent there; the
    # local trainer always gets the number it will run, which the plan also assumes.
    epochs = spec.hyperparameters.epochs if spec.target == "vertex" else prepared.epochs
    values = {
        "epochs": epochs,
        "learningRate": spec.hyperparameters.learning_rate,
        "learningRateMultiplier": spec.hyperparameters.learning_rate_multiplier,
        "batchSize": spec.hyperparameters.batch_size,
    }
    return {key: value for key, value in values.items() if value is not None}


def settings_from_config(config: pulumi.Config, repo_root: Path) -> BackendSettings:
    """The backend settings a stack's config asks for; what it leaves unset keeps ``BackendSettings``' default."""
    poll, retry = config.get_object("pollSeconds"), config.get_object("retrySeconds")
    optional: dict[str, Any] = {
        "deadline_seconds": config.get_float("deadlineSeconds"),
        "keep_versions": config.get_int("keepVersions"),
        "poll_seconds": (float(poll[0]), float(poll[1])) if poll else None,
        "retry_seconds": (float(retry[0]), float(retry[1])) if retry else None,
    }
    return BackendSettings(
        target=config.get("target") or "local",
        repo_root=str(repo_root),
        project=config.get("project") or pulumi.Config("gcp").get("project") or "",
        region=config.get("region") or pulumi.Config("gcp").get("region") or "",
        bucket=config.get("bucket") or "",
        **api_endpoint_settings(config.get("apiEndpoint") or ""),
        storage_endpoint=config.get("storageEndpoint") or "",
        service_account=config.get("serviceAccount") or "",
        kms_key_name=config.get("kmsKeyName") or "",
        stack=pulumi.get_stack(),
        **{key: value for key, value in optional.items() if value is not None},
    )


def main() -> None:
    from tuneform.spec.loader import SpecErrors

    config = pulumi.Config("tuneform")
    repo_root = Path(os.getcwd()).resolve()
    stack = read_stack(repo_root, pulumi.get_stack())
    if stack.problems:
        # Before the engine's config is read: a misspelt setting would be ignored, a malformed one a traceback.
        raise pulumi.RunError(str(SpecErrors(list(stack.problems))))
    settings = settings_from_config(config, repo_root)
    stack = stack.with_values(
        {
            "region": settings.region or None,
            "kmsKeyName": settings.kms_key_name or None,
            "trainingPrices": config.get_object("trainingPrices"),
        }
    )
    try:
        prepared = prepare(
            repo_root,
            settings.target,
            progress=pulumi.log.info,
            warn=pulumi.log.warn,
            prices=training_prices(stack),
        )
        problems, warnings = stack_problems([model.spec for model in prepared], stack)
        for warning in warnings:
            pulumi.log.warn(str(warning))
        if problems:
            raise SpecErrors(problems)
    except SpecErrors as errors:
        # RunError prints the message without a Python traceback: the problems are the user's to fix.
        raise pulumi.RunError(str(errors)) from None
    if settings.target == "vertex" and pulumi.runtime.is_dry_run():
        _ask_whether_offered(settings, prepared)
    storage: list[pulumi.Resource] = []
    if settings.target == "vertex":
        settings, storage = _vertex_storage(config, settings)
    max_cost = config.get_float("maxTrainingCost")
    port = config.get_int("endpointPort") or DEFAULT_PORT
    serving = [model.spec.name for model in prepared if model.spec.endpoint.deploy]
    ports = endpoint_ports(repo_root, serving, port) if settings.target == "local" else {}
    for model in prepared:
        tuned = TunedModel(
            model,
            settings,
            port=ports.get(model.spec.name) if settings.target == "local" else None,
            max_training_cost=max_cost,
            opts=pulumi.ResourceOptions(depends_on=storage),
        )
        pulumi.export(model.spec.name, tuned.outputs)


def _ask_whether_offered(settings: BackendSettings, prepared: list[PreparedModel]) -> None:
    """At preview, where credentials allow, ask Vertex whether each base model is still offered; never required."""
    from tuneform.backends.vertex import VertexBackend

    try:
        backend = VertexBackend.from_settings(settings)
    except Exception:  # noqa: BLE001 - settings problems are reported by the resources; this check is a courtesy
        return
    for base_model in sorted({model.spec.base_model for model in prepared}):
        offered = backend.base_model_offered(base_model)
        if offered is False:
            pulumi.log.warn(
                f"Vertex AI says {base_model} is not offered to this project in {settings.region} (Model Garden "
                "answered 404): a tuning job for it would be refused. See `tuneform models` for current models."
            )
        elif offered is None:
            pulumi.log.info(f"could not ask Vertex AI whether {base_model} is still offered (no credentials?)")


def _vertex_storage(config: pulumi.Config, settings: BackendSettings) -> tuple[BackendSettings, list[pulumi.Resource]]:
    """The dataset bucket and its IAM (pulumi-gcp), unless the stack names an existing bucket.

    The bucket's name is fixed before anything is created (``bucketName``, default ``<project>-tuneform-<stack>``)
    because the dynamic providers carry it as plain data.
    """
    from tuneform.resources.storage import declare_vertex_storage

    storage_config: dict[str, Any] = {
        "project": settings.project,
        "region": settings.region,
        "bucket": settings.bucket,
        "projectNumber": config.get("projectNumber"),
        "serviceAccount": settings.service_account or None,
        "kmsKeyName": settings.kms_key_name or None,
        "enableApis": config.get_bool("enableApis") or False,
        "openModels": config.get_bool("openModels") or False,
        "labels": config.get_object("labels") or {},
        "forceDestroy": config.get_bool("forceDestroy") or False,
        "bucketLocation": config.get("bucketLocation"),
    }
    if not settings.bucket:
        storage_config["bucketName"] = config.get("bucketName") or f"{settings.project}-tuneform-{pulumi.get_stack()}"
    try:
        _, resources = declare_vertex_storage(pulumi.get_stack(), storage_config)
    except ValueError as error:
        raise pulumi.RunError(str(error)) from None
    return replace(settings, bucket=settings.bucket or storage_config["bucketName"]), resources
