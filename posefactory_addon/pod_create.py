"""Create Pod and Terminate Pod: from a RunPod key to a host that takes jobs, and back to nothing.

*Create Pod* reads the GPU catalog while its dialog is open (:mod:`pod_catalog`), checks the
request on the main thread before anything is spent, then runs ``provision.create_pod_host`` in a worker
thread; progress and result reach :data:`CREATE` (drawn by the Remote panel) only through :mod:`ui_channel`,
and the new pod's host becomes the scene's. *Terminate Pod* asks first, ends the pod in a worker thread and
puts the scene back on ``local``. The key: RUNPOD_API_KEY or the preferences (``runpod_environment``).
"""
from __future__ import annotations

import logging
import os
import re
import textwrap
import threading
from dataclasses import dataclass, field
from typing import Any

import bpy
from bpy.props import EnumProperty, FloatProperty, IntProperty, StringProperty

from . import pod_catalog, pod_state, preferences, ui_channel
from .operators import OperatorResult, SceneSettingsOperator
from .pod_catalog import one_line
from .properties import settings_of
from .remote.core.pod_output import clean_text
from .remote.jobs import provision

log = logging.getLogger(__name__)

MAX_LINES = 4  # the create's last progress lines the panel shows
NO_KEY = "No RunPod API key: set RUNPOD_API_KEY or the RunPod key in Preferences > Add-ons > Pose Factory"
CLOUD_ITEMS = [("SECURE", "Secure Cloud", "RunPod's own data centres"),
               ("COMMUNITY", "Community Cloud", "GPUs of RunPod's community hosts: cheaper, less reliable")]


@dataclass
class CreateView:  # the create in flight or last finished, for the Remote panel (main thread only)
    busy: bool = False
    lines: list[str] = field(default_factory=list)
    error: str | None = None
    host: str | None = None  # the host of the pod created last
    scene: str = ""  # whose host becomes the new pod
    cancel: threading.Event = field(default_factory=threading.Event)


CREATE = CreateView()


def start_create(request: provision.PodRequest, context: bpy.types.Context) -> None:
    """Main thread: the checked request's create in a worker thread."""
    CREATE.busy, CREATE.error, CREATE.lines = True, None, []
    CREATE.scene = context.scene.name if context.scene else ""
    cancel = CREATE.cancel = threading.Event()
    hosts_file = preferences.hosts_file(context)  # its names are taken too

    def worker() -> None:
        def progress(line: str) -> None:
            ui_channel.post(ui_channel.PodCreateProgress(clean_text(line, 200)))
        try:
            created = provision.create_pod_host(request, progress, hosts_file=hosts_file, cancel=cancel)
        except Exception as exc:  # every failure is one line in the panel, never a dead thread
            line = one_line(exc)
            log.warning("Create Pod failed: %s", line)
            ui_channel.post(ui_channel.PodCreated(error=line))
            return
        pod = created.pod
        ui_channel.post(ui_channel.PodCreated(created.host, f"{created.host} is ready: pod {pod.id}, ${pod.cost_per_hr:.3f}/h"))

    threading.Thread(target=worker, name="posefactory-pod-create", daemon=True).start()


def create_progress(message: ui_channel.PodCreateProgress) -> None:
    CREATE.lines = [*CREATE.lines, message.line][-MAX_LINES:]


def pod_created(message: ui_channel.PodCreated) -> None:
    """Main thread: the create's end; a new pod's host becomes the scene's host."""
    CREATE.busy, CREATE.error = False, message.error
    if message.host is None:
        return
    CREATE.host, CREATE.lines = message.host, [*CREATE.lines, message.line][-MAX_LINES:]
    scene = bpy.data.scenes.get(CREATE.scene) or bpy.context.scene
    if scene is not None and hasattr(scene, "posefactory"):
        settings_of(scene).host = message.host  # the host list is read from the files, so it knows it already
    pod_state.VIEWS.pop(message.host, None)


def pod_terminated(message: ui_channel.PodTerminated) -> None:
    """Main thread: the pod is gone: its view too, and every scene on its host goes back to local."""
    view = pod_state.VIEWS.setdefault(message.host, pod_state.PodView())
    if message.error:
        view.busy, view.error = None, message.error
        return
    del pod_state.VIEWS[message.host]
    for scene in bpy.data.scenes:
        if hasattr(scene, "posefactory") and settings_of(scene).host == message.host:
            settings_of(scene).host = "local"
    CREATE.host = None if CREATE.host == message.host else CREATE.host
    CREATE.lines, CREATE.error = [message.line], None


class POSEFACTORY_OT_pod_create(SceneSettingsOperator, bpy.types.Operator):
    bl_idname = "posefactory.pod_create"
    bl_label = "Create Pod"
    bl_description = "Create a RunPod GPU pod, billed per hour while it runs, set it up and make it this scene's host"
    bl_options = {"REGISTER"}

    max_price: FloatProperty(name="Max $/h", min=0.01, max=1000.0, default=1.0, precision=2,
                             description="The most the pod may cost per hour, all its GPUs together")
    gpu_id: StringProperty(name="GPU", search=pod_catalog.gpu_search, options={"SKIP_SAVE"},
                           description="The GPU type (empty: the cheapest available under the ceiling)")
    cloud: EnumProperty(name="Cloud", items=CLOUD_ITEMS, default="SECURE", update=pod_catalog.refetch,
                        description="Where the pod runs")
    gpu_count: IntProperty(name="GPUs", min=1, max=8, default=1, update=pod_catalog.refetch, description="GPUs in the pod")
    disk_gb: IntProperty(name="Container Disk (GB)", min=1, max=4096, default=20, description="Cleared on every stop")
    volume_gb: IntProperty(name="Volume Disk (GB)", min=10, max=4096, default=40,
                           description="At the workspace, kept across stops (Blender, uploaded scenes)")
    network_volume_id: StringProperty(name="Network Volume", options={"SKIP_SAVE"},
                                      description="A network volume's id to mount instead (kept after terminate)")
    name: StringProperty(name="Name", options={"SKIP_SAVE"},
                         description="The pod's name after 'posefactory-' (empty: from the GPU)")
    workspace: StringProperty(name="Workspace", default="/workspace", description="Where the pod's volume is mounted")
    idle_stop_minutes: FloatProperty(name="Auto-Stop (idle min)", min=0.0, default=10.0,
                                     description="Stop the pod after this many idle minutes (0: never)")

    def request(self) -> provision.PodRequest:
        version = re.match(r"\d+\.\d+\.\d+", bpy.app.version_string)
        return provision.PodRequest(
            max_price=self.max_price, gpu_id=self.gpu_id.strip() or None, count=self.gpu_count, cloud=self.cloud,
            disk_gb=self.disk_gb, volume_gb=self.volume_gb, network_volume_id=self.network_volume_id.strip() or None,
            name=self.name.strip() or None, workspace=self.workspace, idle_stop_minutes=self.idle_stop_minutes,
            blender_version=version[0] if version else "%d.%d.%d" % bpy.app.version[:3])

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> OperatorResult:
        if problem := preferences.offline("Create Pod (RunPod's API and GPU catalog)"):
            self.report({"ERROR"}, problem)
            return {"CANCELLED"}
        if not preferences.runpod_environment(context):
            self.report({"ERROR"}, NO_KEY)
            return {"CANCELLED"}
        pod_catalog.fetch(self.cloud, self.gpu_count, self.max_price)
        assert context.window_manager is not None
        return context.window_manager.invoke_props_dialog(self, width=560, title="Create RunPod Pod", confirm_text="Create")

    def draw(self, context: bpy.types.Context) -> None:
        assert self.layout is not None
        for name in ("max_price", "gpu_id", "cloud", "gpu_count", "disk_gb", "volume_gb", "network_volume_id", "name",
                     "idle_stop_minutes"):
            self.layout.prop(self, name)
        pod_catalog.draw(self.layout.box(), self.max_price)

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        if CREATE.busy:
            self.report({"ERROR"}, "A pod is being created already: wait for it or cancel it in the Remote panel")
            return {"CANCELLED"}
        if problem := preferences.offline("Create Pod (RunPod's API)"):
            self.report({"ERROR"}, problem)
            return {"CANCELLED"}
        if not preferences.runpod_environment(context):
            self.report({"ERROR"}, NO_KEY)
            return {"CANCELLED"}
        request = self.request()
        try:
            request.check()  # bad input is refused here, before anything is spent
        except Exception as exc:
            self.report({"ERROR"}, f"Create Pod: {one_line(exc)}")
            return {"CANCELLED"}
        start_create(request, context)
        self.report({"INFO"}, f"Creating a RunPod pod at up to ${request.max_price:.2f}/h in the background (it bills once it runs)")
        return {"FINISHED"}


class POSEFACTORY_OT_pod_create_cancel(bpy.types.Operator):
    bl_idname = "posefactory.pod_create_cancel"
    bl_label = "Cancel Create"
    bl_description = "Stop creating the pod: one already asked for is terminated (it holds nothing yet)"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return CREATE.busy

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        CREATE.cancel.set()
        self.report({"INFO"}, "Cancelling the create…")
        return {"FINISHED"}


class POSEFACTORY_OT_pod_terminate(bpy.types.Operator):
    bl_idname = "posefactory.pod_terminate"
    bl_label = "Terminate Pod"
    bl_description = "Terminate the host's RunPod pod (made with Create Pod): its disks are deleted, billing ends, its host entry goes"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        host = pod_state.pod_host(context)
        if host is not None and not host.managed_pod:
            cls.poll_message_set("Only pods made with Create Pod are terminated here (RunPod's console ends others)")
        return host is not None and host.managed_pod

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> OperatorResult:
        host = pod_state.pod_host(context)
        assert host is not None and host.runpod_pod_id is not None and context.window_manager is not None
        return context.window_manager.invoke_confirm(
            self, event, title="Terminate Pod", message=provision.terminate_warning(host.runpod_pod_id, host.name),
            confirm_text="Terminate", icon="WARNING")

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        host = pod_state.pod_host(context)
        assert host is not None and host.runpod_pod_id is not None  # poll() checked it
        view = pod_state.VIEWS.setdefault(host.name, pod_state.PodView())
        if view.busy:
            self.report({"WARNING"}, f"Pod {host.runpod_pod_id}: {view.busy} already in progress")
            return {"CANCELLED"}
        preferences.runpod_environment(context)
        if not os.environ.get(host.runpod_api_key_env):
            self.report({"ERROR"}, NO_KEY)
            return {"CANCELLED"}
        view.busy, pod_id, name, key_env = "terminate", host.runpod_pod_id, host.name, host.runpod_api_key_env

        def worker() -> None:
            try:
                line = provision.terminate_pod(pod_id, key_env=key_env)
                ui_channel.post(ui_channel.PodTerminated(name, pod_id, line=line))
            except Exception as exc:
                ui_channel.post(ui_channel.PodTerminated(name, pod_id, error=one_line(exc)))

        threading.Thread(target=worker, name="posefactory-pod-terminate", daemon=True).start()
        self.report({"INFO"}, f"Pod {pod_id}: terminating (in the background)")
        return {"FINISHED"}


def draw(layout: Any, context: bpy.types.Context) -> None:
    """The Remote panel's Create Pod button and the create's progress (reads CREATE only)."""
    row = layout.row()
    row.enabled = not CREATE.busy
    row.operator("posefactory.pod_create", text="Create Pod…", icon="ADD")
    if not (CREATE.busy or CREATE.lines or CREATE.error):
        return
    box = layout.box()
    for line in CREATE.lines:
        box.label(text=line[:110], icon="SORTTIME" if CREATE.busy else "INFO")
    for part in textwrap.wrap(CREATE.error or "", 100)[:4]:
        box.label(text=part, icon="ERROR")
    if CREATE.busy:
        box.operator("posefactory.pod_create_cancel", icon="CANCEL")


CLASSES = (POSEFACTORY_OT_pod_create, POSEFACTORY_OT_pod_create_cancel, POSEFACTORY_OT_pod_terminate)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    ui_channel.on(ui_channel.PodCreateProgress, create_progress)
    ui_channel.on(ui_channel.PodCreated, pod_created)
    ui_channel.on(ui_channel.PodTerminated, pod_terminated)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
