"""The long-lived GCP pieces of a Vertex stack, declared with pulumi-gcp: dataset bucket, its IAM, the API switch.

Everything here is ordinary pulumi-gcp; the tuning lifecycle itself lives in tuneform's dynamic resources. A stack
whose config names an existing ``bucket`` declares none of these (and so needs no pulumi-gcp plugin), except the IAM
a custom ``serviceAccount`` needs.

Stack config keys (``tuneform:<key>``, passed here as a plain dict):

======================  ===========================================================================================
``project``             GCP project id (required).
``region``              Tuning region, e.g. ``us-central1`` (required); the bucket is created in the same location
                        unless ``bucketLocation`` says otherwise.
``bucketLocation``      Location of the bucket to create (e.g. ``US`` for a multi-region bucket; default: ``region``).
``bucket``              An existing bucket to use instead of creating one; then nothing is declared.
``bucketName``          Name of the bucket to create (default: Pulumi auto-naming from ``<prefix>-datasets``).
``projectNumber``       Project number, for the service agents' e-mail addresses (default: looked up).
``serviceAccount``      A service account that runs tuning jobs; gets read access instead of the tuning agent, the
                        Tuning Service Agent role, and lets the tuning service agent mint its tokens.
``kmsKeyName``          CMEK key for the bucket's objects (the GCS service agent needs encrypt/decrypt on it).
``enableApis``          ``true`` to enable ``aiplatform.googleapis.com`` (left enabled on destroy).
``openModels``          ``true`` if open models are tuned: their agent (or ``serviceAccount``) writes checkpoints
                        under ``tuning-output/``.
``labels``              Labels for the bucket.
``forceDestroy``        ``true`` lets ``pulumi destroy`` delete a non-empty bucket (default ``false``: datasets
                        that tuned models were trained on are kept).
======================  ===========================================================================================
"""

from __future__ import annotations

from typing import Any

import pulumi

VERTEX_API = "aiplatform.googleapis.com"

TUNING_AGENT = "service-{number}@gcp-sa-vertex-tune.iam.gserviceaccount.com"
"""Vertex AI Secure Fine-Tuning Service Agent: runs Gemini tuning jobs unless a service account is configured."""

OPEN_MODEL_AGENT = "service-{number}@gcp-sa-vertex-moss-ft.iam.gserviceaccount.com"
"""Runs managed open-model (OSS) tuning; writes checkpoints to the job's ``outputUri``."""

NONCURRENT_VERSION_DAYS = 30
"""Deleted or replaced objects stay recoverable this long (versioning is on), then stop costing storage."""


def declare_vertex_storage(
    name_prefix: str, config: dict[str, Any]
) -> tuple[pulumi.Output[str], list[pulumi.Resource]]:
    """Declare the dataset bucket and what tuning needs around it, or adopt an existing bucket.

    Args:
        name_prefix: Prefix of the Pulumi resource names (e.g. the stack's name).
        config: Stack config as a dict with the keys in the module docstring.

    Returns:
        The bucket's name (an Output) and the resources declared, in declaration order (empty for an existing
        bucket).

    Raises:
        ValueError: When ``project`` or ``region`` is missing.
    """
    missing = [key for key in ("project", "region") if not config.get(key)]
    if missing:
        raise ValueError(
            "missing required configuration key(s): "
            + ", ".join(missing)
            + "; set them with `pulumi config set tuneform:<key> <value>`"
        )
    project = str(config["project"])
    region = str(config["region"])
    if config.get("bucket"):
        bucket_name = pulumi.Output.from_input(str(config["bucket"]).removeprefix("gs://").rstrip("/"))
        return bucket_name, _service_account_iam(name_prefix, project, config, _ServiceAgents(project, config))

    import pulumi_gcp as gcp

    resources: list[pulumi.Resource] = []

    depends: list[pulumi.Resource] = []
    if config.get("enableApis"):
        service = gcp.projects.Service(
            f"{name_prefix}-aiplatform-api",
            project=project,
            service=VERTEX_API,
            # Other stacks and people use Vertex in this project too; destroying ours must not switch it off.
            disable_on_destroy=False,
            disable_dependent_services=False,
        )
        resources.append(service)
        depends.append(service)

    bucket_args: dict[str, Any] = {
        "project": project,
        # A multi-region (US, EU) bucket if the stack asks for one; by default the tuning region, where jobs read.
        "location": str(config.get("bucketLocation") or region).upper(),
        "uniform_bucket_level_access": True,
        "public_access_prevention": "enforced",
        "versioning": gcp.storage.BucketVersioningArgs(enabled=True),
        "lifecycle_rules": [
            gcp.storage.BucketLifecycleRuleArgs(
                action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
                condition=gcp.storage.BucketLifecycleRuleConditionArgs(
                    days_since_noncurrent_time=NONCURRENT_VERSION_DAYS, with_state="ARCHIVED"
                ),
            )
        ],
        "labels": {**{str(k): str(v) for k, v in (config.get("labels") or {}).items()}, "managed-by": "tuneform"},
        "force_destroy": bool(config.get("forceDestroy", False)),
    }
    if config.get("bucketName"):
        bucket_args["name"] = str(config["bucketName"])
    if config.get("kmsKeyName"):
        bucket_args["encryption"] = gcp.storage.BucketEncryptionArgs(default_kms_key_name=str(config["kmsKeyName"]))
    bucket = gcp.storage.Bucket(
        f"{name_prefix}-datasets", **bucket_args, opts=pulumi.ResourceOptions(depends_on=depends or None)
    )
    resources.append(bucket)

    agents = _ServiceAgents(project, config)
    reader = (
        pulumi.Output.from_input(f"serviceAccount:{config['serviceAccount']}")
        if config.get("serviceAccount")
        else agents.member(TUNING_AGENT)
    )
    resources.append(
        gcp.storage.BucketIAMMember(
            f"{name_prefix}-datasets-tuning-reader",
            bucket=bucket.name,
            role="roles/storage.objectViewer",
            member=reader,
            opts=pulumi.ResourceOptions(depends_on=depends or None),
        )
    )
    if config.get("openModels"):
        # Open-model jobs read the datasets and write checkpoints under tuning-output/ in the same bucket.
        resources.append(
            gcp.storage.BucketIAMMember(
                f"{name_prefix}-datasets-open-model-writer",
                bucket=bucket.name,
                role="roles/storage.objectUser",
                member=reader if config.get("serviceAccount") else agents.member(OPEN_MODEL_AGENT),
                opts=pulumi.ResourceOptions(depends_on=depends or None),
            )
        )
    resources.extend(_service_account_iam(name_prefix, project, config, agents))
    return bucket.name, resources


class _ServiceAgents:
    """The project's service agents, named by its number: looked up once (``projectNumber`` or a getProject call)."""

    def __init__(self, project: str, config: dict[str, Any]) -> None:
        self.project = project
        self.config = config
        self._number: pulumi.Input[str] | None = None

    def member(self, template: str) -> pulumi.Output[str]:
        """``serviceAccount:`` member of one agent (``template`` takes the project number)."""
        if self._number is None:
            import pulumi_gcp as gcp

            if self.config.get("projectNumber"):
                self._number = str(self.config["projectNumber"])
            else:
                self._number = gcp.organizations.get_project_output(project_id=self.project).number
        return pulumi.Output.from_input(self._number).apply(lambda n: f"serviceAccount:{template.format(number=n)}")


def _service_account_iam(
    name_prefix: str, project: str, config: dict[str, Any], agents: _ServiceAgents
) -> list[pulumi.Resource]:
    """What a custom ``serviceAccount`` needs to run tuning jobs (sources.yaml: V-sft-use, V-tuning-ref).

    "If you plan to use a customer-managed Service Account, you must grant the roles/aiplatform.tuningServiceAgent
    role to the service account. Also grant the Tuning Service Agent roles/iam.serviceAccountTokenCreator role to the
    customer-managed Service Account." The identity running ``pulumi up`` also needs ``iam.serviceAccounts.actAs``
    on it (roles/iam.serviceAccountUser), which tuneform cannot grant itself.
    """
    account = config.get("serviceAccount")
    if not account:
        return []
    import pulumi_gcp as gcp

    return [
        gcp.projects.IAMMember(
            f"{name_prefix}-tuning-sa-agent-role",
            project=project,
            role="roles/aiplatform.tuningServiceAgent",
            member=f"serviceAccount:{account}",
        ),
        gcp.serviceaccount.IAMMember(
            f"{name_prefix}-tuning-agent-token-creator",
            service_account_id=f"projects/{project}/serviceAccounts/{account}",
            role="roles/iam.serviceAccountTokenCreator",
            member=agents.member(TUNING_AGENT),
        ),
    ]
