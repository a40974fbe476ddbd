"""The Serverless worker under the runpod SDK's own local test server, with moto
as the bucket (presigned URLs both ways) and real bpy rendering."""
from __future__ import annotations

import hashlib
import json

import pytest

from remote.bridge.transfer.s3 import client
from remote.core.config import StorageConfig


@pytest.fixture
def bucket(s3_server, s3_credentials):
    # The laptop's own client (SigV4, as with R2) signs the URLs.
    name = s3_server.make_bucket()
    return client(StorageConfig(endpoint_url=s3_server.endpoint_url, bucket=name, region="us-east-1")), name


def scene_file(bucket, path: str, data: bytes) -> dict:
    s3, name = bucket
    sha = hashlib.sha256(data).hexdigest()
    s3.put_object(Bucket=name, Key=f"objects/{sha}", Body=data)
    get = s3.generate_presigned_url("get_object", Params={"Bucket": name, "Key": f"objects/{sha}"}, ExpiresIn=600)
    return {"path": path, "sha256": sha, "size": len(data), "url": get}


def item_payload(bucket, scene_bytes: bytes, item: str, names=("render.png", "manifest.json"), **job) -> dict:
    s3, name = bucket
    outputs = {n: s3.generate_presigned_url("put_object", Params={"Bucket": name, "Key": f"out/{item}/{n}"},
                                            ExpiresIn=600) for n in names}
    return {"item": item, "job": {"prompt": "a knight", "backend": "none", "render_samples": 1, **job},
            "scene": {"blend": "scene.blend", "files": [scene_file(bucket, "scene.blend", scene_bytes)]},
            "outputs": outputs}


def test_item_renders_with_real_blender_and_uploads_through_presigned_urls(serverless_worker, bucket, sample_scene):
    s3, name = bucket
    job_id = serverless_worker.run(item_payload(bucket, sample_scene.read_bytes(), "pose-01"))
    answer = serverless_worker.status(job_id)
    assert answer["status"] == "COMPLETED", answer
    output = answer["output"]
    assert output["item"] == "pose-01" and output["files"] == ["manifest.json", "render.png"]
    assert output["manifest"]["status"] == "done" and output["manifest"]["size"] == [1024, 1024]
    png = s3.get_object(Bucket=name, Key="out/pose-01/render.png")["Body"].read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    manifest = json.loads(s3.get_object(Bucket=name, Key="out/pose-01/manifest.json")["Body"].read())
    assert manifest["prompt"] == "a knight" and manifest["render"] == "render.png"
    # A second item of the same scene reuses the worker's copy: it is not fetched again.
    s3.delete_object(Bucket=name, Key=f"objects/{hashlib.sha256(sample_scene.read_bytes()).hexdigest()}")
    second = item_payload(bucket, sample_scene.read_bytes(), "pose-02")
    s3.delete_object(Bucket=name, Key=f"objects/{hashlib.sha256(sample_scene.read_bytes()).hexdigest()}")
    assert serverless_worker.status(serverless_worker.run(second))["status"] == "COMPLETED"


@pytest.mark.parametrize("change, error", [
    (lambda p: p["scene"]["files"][0].update(sha256="0" * 64), "its sha256 does not match"),
    (lambda p: p["scene"].update(blend="../../etc/passwd"), "refusing path outside the job tree"),
    (lambda p: p["scene"]["files"][0].update(path="/etc/passwd"), "refusing path outside the job tree"),
    (lambda p: p["scene"]["files"].append({**p["scene"]["files"][0], "path": "a/../../x"}), "outside the job tree"),
    (lambda p: p["scene"]["files"][0].update(size=True), "a file without a size"),
    (lambda p: p["job"].update(blend_path="/etc/passwd"), "paths are the worker's own"),
    (lambda p: p["job"].update(steps=500), "invalid job: steps: 500"),
    (lambda p: p.update(api_key="rp-secret"), "unknown field(s) api_key"),
    (lambda p: p["outputs"].update({"../../etc/cron.d/x": "http://127.0.0.1/"}), "is not a name the job writes"),
    (lambda p: p["scene"]["files"][0].update(url="file:///etc/passwd"), "file 0's url: expected an http(s) URL"),
    (lambda p: p.update(item="a b/c"), "item: expected an id"),
])
def test_bad_items_fail_with_one_clear_error(serverless_worker, bucket, change, error):
    payload = item_payload(bucket, b"not really a scene", "bad")
    change(payload)
    answer = serverless_worker.status(serverless_worker.run(payload))
    assert answer["status"] == "FAILED" and error in answer["error"], answer


def test_a_scene_blender_cannot_open_fails_the_item_and_still_uploads_the_manifest(serverless_worker, bucket):
    s3, name = bucket
    answer = serverless_worker.status(serverless_worker.run(item_payload(bucket, b"no scene at all, just bytes", "broken")))
    assert answer["status"] == "FAILED" and answer["error"].startswith("render_job exited "), answer
    assert "see the worker log" not in answer["error"]  # the job's own reason, from its manifest
    manifest = json.loads(s3.get_object(Bucket=name, Key="out/broken/manifest.json")["Body"].read())
    assert manifest["status"] == "failed"
