"""``declare_vertex_storage`` under Pulumi's mocks: every input of every pulumi-gcp resource, for each config shape.

No pulumi-gcp plugin runs: ``pulumi.runtime.set_mocks`` answers resource registrations and the project lookup.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from tuneform.resources.storage import declare_vertex_storage

pytestmark = pytest.mark.timeout(60)


class RecordingMocks(pulumi.runtime.Mocks):
    """Records each registered resource's inputs; answers ``gcp:organizations/getProject`` with a number."""

    def __init__(self) -> None:
        self.resources: dict[str, tuple[str, dict[str, Any]]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        self.resources[args.name] = (args.typ, dict(args.inputs))
        outputs = dict(args.inputs)
        if args.typ == "gcp:storage/bucket:Bucket":
            outputs.setdefault("name", f"{args.name}-4f2a1c")  # what auto-naming would add
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list[tuple[str, str]] | None]:
        self.calls.append((args.token, dict(args.args)))
        if args.token == "gcp:organizations/getProject:getProject":
            return {"number": "987654321098", "projectId": args.args.get("projectId")}, []
        raise AssertionError(f"unexpected invoke {args.token}")


def after(name: pulumi.Output[str], resources: list[pulumi.Resource], check: Any) -> pulumi.Output[None]:
    """Run ``check(bucket name)`` once every declared resource has been registered with the mocks."""
    return pulumi.Output.all(name, *[r.urn for r in resources]).apply(lambda values: check(values[0]))


@pytest.fixture
def mocks() -> RecordingMocks:
    m = RecordingMocks()
    pulumi.runtime.set_mocks(m, project="tuneform", stack="test", preview=False)
    return m


BASE = {"project": "acme-ml", "region": "europe-west4"}

LIFECYCLE = [{"action": {"type": "Delete"}, "condition": {"daysSinceNoncurrentTime": 30, "withState": "ARCHIVED"}}]


@pulumi.runtime.test
def test_full_config(mocks):
    config = {
        **BASE,
        "enableApis": True,
        "kmsKeyName": "projects/acme-ml/locations/europe-west4/keyRings/r/cryptoKeys/k",
        "labels": {"team": "support"},
        "bucketName": "acme-tuning-data",
        "projectNumber": "111122223333",
        "openModels": True,
        "forceDestroy": True,
    }
    name, resources = declare_vertex_storage("prod", config)

    def check(bucket_name: str) -> None:
        assert bucket_name == "acme-tuning-data"
        assert [r[0] for r in mocks.resources.values()] == [
            "gcp:projects/service:Service",
            "gcp:storage/bucket:Bucket",
            "gcp:storage/bucketIAMMember:BucketIAMMember",
            "gcp:storage/bucketIAMMember:BucketIAMMember",
        ]
        assert len(resources) == 4
        assert mocks.resources["prod-aiplatform-api"][1] == {
            "project": "acme-ml",
            "service": "aiplatform.googleapis.com",
            "disableOnDestroy": False,
            "disableDependentServices": False,
        }
        assert mocks.resources["prod-datasets"][1] == {
            "name": "acme-tuning-data",
            "project": "acme-ml",
            "location": "EUROPE-WEST4",
            "uniformBucketLevelAccess": True,
            "publicAccessPrevention": "enforced",
            "versioning": {"enabled": True},
            "lifecycleRules": LIFECYCLE,
            "labels": {"team": "support", "managed-by": "tuneform"},
            "encryption": {"defaultKmsKeyName": "projects/acme-ml/locations/europe-west4/keyRings/r/cryptoKeys/k"},
            "forceDestroy": True,
        }
        assert mocks.resources["prod-datasets-tuning-reader"][1] == {
            "bucket": "acme-tuning-data",
            "role": "roles/storage.objectViewer",
            "member": "serviceAccount:service-111122223333@gcp-sa-vertex-tune.iam.gserviceaccount.com",
        }
        assert mocks.resources["prod-datasets-open-model-writer"][1] == {
            "bucket": "acme-tuning-data",
            "role": "roles/storage.objectUser",
            "member": "serviceAccount:service-111122223333@gcp-sa-vertex-moss-ft.iam.gserviceaccount.com",
        }
        assert mocks.calls == []  # the project number came from config

    return after(name, resources, check)


@pulumi.runtime.test
def test_minimal_config_looks_up_project_number(mocks):
    name, resources = declare_vertex_storage("dev", dict(BASE))

    def check(bucket_name: str) -> None:
        assert bucket_name == "dev-datasets-4f2a1c"
        assert sorted(mocks.resources) == ["dev-datasets", "dev-datasets-tuning-reader"]
        assert len(resources) == 2
        assert mocks.resources["dev-datasets"][1] == {
            "project": "acme-ml",
            "location": "EUROPE-WEST4",
            "uniformBucketLevelAccess": True,
            "publicAccessPrevention": "enforced",
            "versioning": {"enabled": True},
            "lifecycleRules": LIFECYCLE,
            "labels": {"managed-by": "tuneform"},
            "forceDestroy": False,
        }
        assert mocks.resources["dev-datasets-tuning-reader"][1] == {
            "bucket": "dev-datasets-4f2a1c",
            "role": "roles/storage.objectViewer",
            "member": "serviceAccount:service-987654321098@gcp-sa-vertex-tune.iam.gserviceaccount.com",
        }
        assert mocks.calls == [("gcp:organizations/getProject:getProject", {"projectId": "acme-ml"})]

    return after(name, resources, check)


@pulumi.runtime.test
def test_bucket_location_from_config(mocks):
    # The shipped vertex stack sets tuneform:bucketLocation; it was once read by nothing.
    name, resources = declare_vertex_storage("dev", {**BASE, "bucketLocation": "us"})

    def check(_bucket_name: str) -> None:
        assert mocks.resources["dev-datasets"][1]["location"] == "US"

    return after(name, resources, check)


@pulumi.runtime.test
def test_configured_service_account_gets_access_instead_of_agents(mocks):
    sa = "tuner@acme-ml.iam.gserviceaccount.com"
    name, resources = declare_vertex_storage(
        "sa", {**BASE, "serviceAccount": sa, "openModels": True, "projectNumber": "1"}
    )

    def check(_: str) -> None:
        members = {n: i["member"] for n, (t, i) in mocks.resources.items() if t.endswith("BucketIAMMember")}
        assert members == {"sa-datasets-tuning-reader": f"serviceAccount:{sa}",
                           "sa-datasets-open-model-writer": f"serviceAccount:{sa}"}  # fmt: skip

    return after(name, resources, check)


@pulumi.runtime.test
def test_existing_bucket_declares_nothing(mocks):
    name, resources = declare_vertex_storage("ext", {**BASE, "bucket": "gs://team-bucket/", "enableApis": True})

    def check(bucket_name: str) -> None:
        assert bucket_name == "team-bucket"
        assert resources == [] and mocks.resources == {} and mocks.calls == []

    return after(name, resources, check)


def test_missing_keys_are_named_with_the_fix():
    with pytest.raises(ValueError, match=r"missing required configuration key\(s\): project, region; set them with"):
        declare_vertex_storage("x", {})
