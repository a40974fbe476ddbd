"""The Stability client against our contract-strict stand-in server."""
from __future__ import annotations

import socket

import pytest
import requests

from remote.core.jobspec import RenderJob
from remote.stability import v1 as stability
from tests.fixtures.stability_server import DROP_CONNECTION, make_png, png_text

INIT = make_png(1024, 1024, (10, 20, 30), {})


def job(**overrides) -> RenderJob:
    values = dict(blend_path="s.blend", output_dir="out", prompt="a knight in armour", negative_prompt="blurry",
                  steps=20, seed=42, variations=2, sampler="K_EULER", style_preset="3d-model")
    values.update(overrides)
    return RenderJob(**values)


def client(server, key=None, **kw) -> stability.StabilityClient:
    return stability.StabilityClient(key or server.api_key, server.base_url, sleep=lambda s: None, **kw)


def test_request_follows_the_contract_and_artifacts_are_decoded(stability_server):
    hostile = "a \"knight\" $(rm -rf ~) `id` 'x' \u00e9\u4e2d\nsecond line"
    artifacts = client(stability_server).image_to_image(INIT, job(prompt=hostile))
    (request,) = stability_server.requests
    assert request["prompts"] == [{"text": hostile, "weight": "1"}, {"text": "blurry", "weight": "-1"}]
    assert request["fields"]["samples"] == "2" and request["fields"]["init_image_mode"] == "IMAGE_STRENGTH"
    assert request["headers"]["Accept"] == "application/json"
    assert [a.seed for a in artifacts] == [42, 43] and all(a.usable for a in artifacts)
    assert png_text(artifacts[0].png)["prompt"] == hostile


def test_wrong_size_gets_the_documented_400_message(stability_server):
    small = make_png(512, 512, (0, 0, 0), {})
    with pytest.raises(stability.BadRequest, match="invalid_height_or_width"):
        client(stability_server).image_to_image(small, job())


@pytest.mark.parametrize("key, status", [("sk-wrong-key-123456", 401), ("suspended", 403)])
def test_key_problems_never_echo_the_key(stability_server, key, status):
    key = stability_server.suspended_key if key == "suspended" else key
    with pytest.raises(stability.AuthenticationError) as raised:
        client(stability_server, key).image_to_image(INIT, job())
    assert raised.value.status == status
    assert key not in str(raised.value) and key not in repr(client(stability_server, key))


def test_missing_key_is_refused_before_any_request(stability_server):
    with pytest.raises(stability.AuthenticationError, match="STABILITY_API_KEY"):
        stability.StabilityClient("", stability_server.base_url)
    assert stability_server.requests == []


def test_unknown_engine_is_404(stability_server):
    with pytest.raises(stability.NotFound):
        client(stability_server).image_to_image(INIT, job(engine_id="stable-diffusion-v9"))


def test_429_is_retried_with_bounded_backoff_then_succeeds(stability_server):
    waits = []
    stability_server.then(429, times=2, headers={"Retry-After": "3"})
    c = stability.StabilityClient(stability_server.api_key, stability_server.base_url, sleep=waits.append,
                                  backoff_s=1, max_backoff_s=5)
    assert len(c.image_to_image(INIT, job(variations=1))) == 1
    assert c.attempts == 3 and waits == [3, 3]


def test_5xx_gives_up_after_bounded_retries(stability_server):
    stability_server.then(500, times=10)
    c = client(stability_server, max_retries=2)
    with pytest.raises(stability.ServerError, match="gave up after 3 attempts"):
        c.image_to_image(INIT, job())
    assert len(stability_server.requests) == 3


def test_timeout_is_retried_then_reported(stability_server):
    stability_server.then(200, times=3, delay_s=1.0)
    with pytest.raises(stability.RequestTimedOut):
        client(stability_server, timeout_s=0.2, max_retries=1).image_to_image(INIT, job())


def test_content_filtered_artifacts_are_not_usable(stability_server):
    stability_server.then(200, finish_reason="CONTENT_FILTERED")
    artifacts = client(stability_server).image_to_image(INIT, job())
    assert [a.finish_reason for a in artifacts] == ["CONTENT_FILTERED"] * 2
    assert not any(a.usable for a in artifacts)


def test_stand_in_rejects_unknown_fields_and_bad_ranges(stability_server):
    url = f"{stability_server.base_url}/v1/generation/stable-diffusion-xl-1024-v1-0/image-to-image"
    headers = {"Authorization": f"Bearer {stability_server.api_key}", "Accept": "application/json"}
    base = [("init_image", ("i.png", INIT, "image/png")), ("text_prompts[0][text]", (None, "x"))]
    assert requests.post(url, headers=headers, files=base, timeout=10).status_code == 200
    for extra in [("strength", "0.5"), ("steps", "5"), ("samples", "11"), ("cfg_scale", "99")]:
        answer = requests.post(url, headers=headers, files=base + [(extra[0], (None, extra[1]))], timeout=10)
        assert answer.status_code == 400 and extra[0] in answer.json()["message"]
    assert requests.post(url, headers={"Accept": "application/json"}, files=base, timeout=10).status_code == 401


def test_dropped_connection_is_retried_then_succeeds(stability_server):
    stability_server.then(DROP_CONNECTION)
    c = client(stability_server)
    assert len(c.image_to_image(INIT, job(variations=1))) == 1 and c.attempts == 2


def test_unreachable_server_gives_up_with_a_clear_error():
    with socket.socket() as sock:  # a port that is bound but never accepts
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        c = stability.StabilityClient("sk-some-key-1234567", url, sleep=lambda s: None, max_retries=1)
        with pytest.raises(stability.ServerError, match="cannot reach .*gave up after 2 attempts") as raised:
            c.image_to_image(INIT, job())
    assert "sk-some-key" not in str(raised.value)


def test_a_200_without_artifacts_is_a_clear_error(stability_server):
    stability_server.then(200, body={"unexpected": True})
    with pytest.raises(stability.ServerError, match="not the documented artifacts list"):
        client(stability_server).image_to_image(INIT, job())


def test_bad_request_shows_the_apis_message(stability_server):
    stability_server.then(400, body={"id": "x1", "name": "invalid_prompts", "message": "prompt too spicy"})
    with pytest.raises(stability.BadRequest, match="invalid_prompts: prompt too spicy") as raised:
        client(stability_server).image_to_image(INIT, job())
    assert raised.value.status == 400 and len(stability_server.requests) == 1  # a 400 is not retried


def test_stand_in_rejects_missing_parts_and_wrong_headers(stability_server):
    url = f"{stability_server.base_url}/v1/generation/stable-diffusion-xl-1024-v1-0/image-to-image"
    auth = {"Authorization": f"Bearer {stability_server.api_key}"}
    json_auth = {**auth, "Accept": "application/json"}
    prompt = [("text_prompts[0][text]", (None, "x"))]
    image = [("init_image", ("i.png", INIT, "image/png"))]
    cases = [
        (json_auth, prompt, "init_image: required"),
        (json_auth, image, "text_prompts"),
        (json_auth, [("init_image", ("i.png", make_png(1000, 1000, (0, 0, 0), {}), "image/png"))] + prompt,
         "1000x1000"),
        (json_auth, [("init_image", ("i.jpg", b"\xff\xd8 not a png", "image/jpeg"))] + prompt, "not a PNG"),
        (json_auth, image + [("text_prompts[1][text]", (None, "x"))], "numbered from 0"),
        ({**auth, "Accept": "image/png"}, image + prompt, "Accept"),
    ]
    for headers, parts, message in cases:
        answer = requests.post(url, headers=headers, files=parts, timeout=10)
        assert answer.status_code == 400 and message in answer.json()["message"], (message, answer.text)
        assert set(answer.json()) == {"id", "name", "message"}
    form = requests.post(url, headers=json_auth, data={"text_prompts[0][text]": "x"}, timeout=10)
    assert form.status_code == 400 and "multipart" in form.json()["message"]
