"""Pods Pose Factory creates: a GPU chosen from the live catalog under a $/h ceiling, a name
that marks the pod as ours (so a list finds a forgotten one), and terminate.

The catalog reserves nothing, so a GPU it shows may be gone by the create;
RunPod then answers 400 "no longer any instances" and that line is the error.
"""
from __future__ import annotations

import re

from .records import CLOUDS, GpuOffer, Pod, RunPodError
from .rest import PodSpec, RestClient

POD_NAME_PREFIX = "posefactory-"
# RunPod's official image that runs sshd with PUBLIC_KEY (runpod/containers start.sh).
DEFAULT_IMAGE = "runpod/base:1.0.2-cuda1281-ubuntu2404"
NAME_SUFFIX = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")


def pod_name(suffix: str) -> str:
    if not NAME_SUFFIX.fullmatch(suffix):
        raise RunPodError(f"pod name {suffix!r}: lower-case letters, digits and '-' only (up to 41)")
    return f"{POD_NAME_PREFIX}{suffix}"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:41] or "pod"


def is_ours(pod: Pod) -> bool:
    return pod.name.startswith(POD_NAME_PREFIX)


def _offer_line(offer: GpuOffer, cloud: str, count: int) -> str:
    price = offer.price(cloud)
    return f"{offer.id} (${price * count:.2f}/h, {offer.availability.lower()})" if price is not None else offer.id


def affordable(offers: list[GpuOffer], cloud: str, count: int, max_price: float) -> list[GpuOffer]:
    """Offers available now in ``cloud`` with ``count`` GPUs at or under ``max_price`` $/h, cheapest first."""
    def fits(offer: GpuOffer) -> bool:
        price = offer.price(cloud)
        max_count = offer.max_count_secure if cloud == "SECURE" else offer.max_count_community
        return (price is not None and offer.availability != "NONE" and price * count <= max_price
                and count <= max_count)
    return sorted((o for o in offers if fits(o)), key=lambda o: (o.price(cloud) or 0.0, o.id))


def choose_gpu(offers: list[GpuOffer], gpu_id: str | None, cloud: str, count: int, max_price: float) -> GpuOffer:
    """The offer to create with: ``gpu_id`` when it is available under the ceiling, else the cheapest that is.

    Refused in one line, before any money is spent, when nothing fits; the line
    names what does fit (or that nothing does at this ceiling).
    """
    if cloud not in CLOUDS:
        raise RunPodError(f"cloud {cloud!r}: SECURE or COMMUNITY")
    if count < 1 or not max_price > 0:
        raise RunPodError(f"need at least 1 GPU and a $/h ceiling above 0 (asked {count} GPU(s) at ${max_price}/h)")
    fitting = affordable(offers, cloud, count, max_price)
    if gpu_id is None:
        if fitting:
            return fitting[0]
        available = [o for o in offers if o.availability != "NONE" and o.price(cloud) is not None]
        available.sort(key=lambda o: (o.price(cloud) or 0.0, o.id))
        cheapest = ", ".join(f"{o.id} (${(o.price(cloud) or 0.0) * count:.2f}/h)" for o in available[:3])
        raise RunPodError(f"no GPU available in {cloud} at or under ${max_price:.2f}/h for {count} GPU(s); "
                          f"raise the $/h ceiling or try the other cloud"
                          f"{'; cheapest available: ' + cheapest if cheapest else ''}")
    chosen = next((o for o in fitting if o.id == gpu_id), None)
    if chosen is not None:
        return chosen
    known = next((o for o in offers if o.id == gpu_id), None)
    why = ("not in RunPod's catalog" if known is None else
           "not available now" if known.availability == "NONE" or known.price(cloud) is None else
           f"{_offer_line(known, cloud, count)}, over the ceiling")
    alternatives = ", ".join(_offer_line(o, cloud, count) for o in fitting[:5]) or "none"
    raise RunPodError(f"no {gpu_id} for ${max_price:.2f}/h in {cloud}: {why}; available at or under the ceiling: "
                      f"{alternatives}")


def create_pod(client: RestClient, offer: GpuOffer, name: str, cloud: str, count: int, disk_gb: int,
               public_key: str | None = None, network_volume_id: str | None = None,
               image: str = DEFAULT_IMAGE, volume_gb: int | None = None, volume_path: str = "/workspace") -> Pod:
    """A pod of ``offer`` with SSH on 22/tcp (``PUBLIC_KEY`` when given); it starts PROVISIONING.

    Storage at ``volume_path``: the network volume when given, else a volume disk of ``volume_gb``.
    """
    data_centers: tuple[str, ...] = ()
    if network_volume_id:
        # The volume must be in the pod's data centre; whether RunPod picks it itself is not documented.
        data_centers = (client.get_network_volume(network_volume_id).data_center_id,)
    spec = PodSpec(name=name, image=image, gpu_id=offer.id, gpu_count=count, cloud=cloud, disk_gb=disk_gb,
                   env={"PUBLIC_KEY": public_key} if public_key else {}, data_center_ids=data_centers,
                   network_volume_id=network_volume_id, persistent_volume_gb=volume_gb, volume_path=volume_path)
    return client.create_pod(spec)


def terminate(client: RestClient, pod_id: str) -> Pod:
    """Terminate the pod; the pod as it was (its name and price, for the caller's line and ledger)."""
    pod = client.get_pod(pod_id)
    if pod.status != "TERMINATED":
        client.pod_action(pod_id, "terminate")
    return pod
